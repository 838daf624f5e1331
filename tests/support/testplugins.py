"""Plugins used only by the tests: slow, streaming, notifying, failing routes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse

from isthmus import Plugin, PluginSession


class ProbeSession(PluginSession):
    async def ping(self, n: int = 0) -> dict[str, Any]:
        self._check_active()
        if self._notify:
            self._notify("probe", {"id": n, "state": "PINGED"})
        return {"pong": n}


class PluginProbe(Plugin):
    plugin_name = "probe"
    title = "Probe"
    version = "9.9.9"
    session_class = ProbeSession

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.marker_dir = Path(os.environ.get("PROBE_MARKERS", "/tmp"))
        self.add_route_get("sleep", self.sleep)
        self.add_route_post("echo", self.echo)
        self.add_route_get("stream", self.stream)
        self.add_route_post("ping/{sid}", self.ping)
        self.add_route_get("whoami", self.whoami)
        self.add_route_post("broadcast", self.broadcast)
        self.add_route_get("query", self.query)
        self.add_route_get("topology", self.topology)
        self.add_route_post("thread_notify", self.thread_notify)
        self.add_route_get("request_id", self.request_id)
        self.seen_topology: list[list[str]] = []

    async def sleep(self, request: Request) -> dict[str, Any]:
        seconds = float(request.query_params.get("s", "1"))
        tag = request.query_params.get("tag", "x")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            (self.marker_dir / f"cancelled-{tag}").write_text("yes")
            raise
        return {"slept": seconds}

    async def echo(self, request: Request) -> dict[str, Any]:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    async def stream(self, request: Request) -> StreamingResponse:
        size = int(request.query_params.get("n", "0"))
        block = bytes(range(256)) * 256  # 64 KiB

        async def gen() -> Any:
            left = size
            while left > 0:
                piece = block[: min(left, len(block))]
                left -= len(piece)
                yield piece

        return StreamingResponse(gen(), media_type="application/octet-stream")

    async def ping(self, request: Request) -> Any:
        data = await request.json()
        return await self._forward(request.path_params["sid"], ProbeSession.ping, n=data.get("n", 0))

    async def whoami(self, request: Request) -> dict[str, Any]:
        who = self.principal()
        return {"name": who.name if who else None, "role": who.role.name if who else None}

    async def broadcast(self, request: Request) -> dict[str, Any]:
        count = int(request.query_params.get("n", "1"))
        for i in range(count):
            self.notify("flood", {"i": i})
        return {"sent": count}

    async def on_topology_change(self, edges: dict[str, Any]) -> None:
        self.seen_topology.append(sorted(edges))

    async def topology(self, request: Request) -> dict[str, Any]:
        return {"seen": self.seen_topology}

    async def thread_notify(self, request: Request) -> dict[str, Any]:
        """Notify from a plain thread, as PSI/J and executor callbacks do."""
        import threading

        t = threading.Thread(target=lambda: self.notify("threaded", {"from": "thread"}))
        t.start()
        t.join()
        return {"ok": True}

    async def request_id(self, request: Request) -> dict[str, Any]:
        """The bridge's request id as plugins see it; also logged, to find it in the edge's log."""
        logging.getLogger("testplugins.probe").warning("probe saw this request")
        return {"request_id": request.state.request_id}

    async def query(self, request: Request) -> dict[str, Any]:
        return {"query": str(request.query_params), "path": request.url.path,
                "headers": {k: v for k, v in request.headers.items() if k.startswith("x-")}}


class PluginBroken(Plugin):
    plugin_name = "broken"

    async def on_startup(self) -> None:
        raise RuntimeError("cannot reach the frobnicator")


class PluginEvil(Plugin):
    """Names and texts full of markup: the Explorer must show them as text."""

    plugin_name = "evil"
    title = '<img src=x onerror="window.__pwned=1">'
    description = "<script>window.__pwned=2</script> description"
    ui_config = {"title": "<b onmouseover=alert(1)>evil</b>", "description": "<script>window.__pwned=3</script>",
                 "monitors": [{"id": "m", "title": "<i>raw</i>", "type": "raw", "endpoint": "version"}]}


# -- errors of every kind, raised from both route styles (tests/integration/test_error_path.py) ----

def fault(kind: str) -> BaseException:
    """The exception a test asks a route to raise, by name."""
    from fastapi import HTTPException

    from isthmus.errors import ConfigError, PluginError, SchedulerError, SessionNotFound

    faults: dict[str, BaseException] = {
        "plugin": PluginError({"message": "I'm a teapot", "shape": "short and stout"}, 418),
        "session": SessionNotFound("no session session.1; call register_session first"),
        "scheduler": SchedulerError("squeue failed (exit 1): boom", command=["squeue", "--json"], stderr="boom"),
        "http": HTTPException(409, "busy: try again", headers={"Retry-After": "3"}),
        "value": ValueError("count must be positive"),
        "recursion": RecursionError("maximum recursion depth exceeded"),
        "overflow": OverflowError("int too large to convert"),
        "config": ConfigError("expected a number", file="faults.yaml", key="limit"),
        "boom": RuntimeError("disk on fire"),
    }
    return faults[kind]


async def scheduler_failure(kind: str) -> str:
    """Run a scheduler-like CLI that fails the way ``kind`` says, through ``run_command``."""
    from isthmus.schedulers.base import run_command

    if kind == "failed":
        return await run_command(["sh", "-c", "echo 'sbatch: error: invalid partition' >&2; exit 1"])
    if kind == "missing":
        return await run_command(["isthmus-no-such-scheduler-cli", "--json"])
    if kind == "timeout":
        return await run_command(["sleep", "5"], timeout=0.2)
    raise ValueError(f"no scheduler failure {kind!r}")


class PluginFaults(Plugin):
    """Raises every kind of error from ``add_route_*`` routes and from ``register_routes`` ones."""

    plugin_name = "faults"

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.add_route_get("raise/{kind}", self.raise_kind)
        self.add_route_get("scheduler/{kind}", self.scheduler)

    async def raise_kind(self, request: Request) -> dict[str, Any]:
        raise fault(request.path_params["kind"])

    async def scheduler(self, request: Request) -> dict[str, Any]:
        return {"out": await scheduler_failure(request.path_params["kind"])}

    def register_routes(self, router: Any) -> None:
        @router.get("/r/raise/{kind}")
        async def raise_kind(kind: str) -> dict[str, Any]:
            raise fault(kind)

        @router.get("/r/scheduler/{kind}")
        async def scheduler(kind: str) -> dict[str, Any]:
            return {"out": await scheduler_failure(kind)}

        @router.post("/r/typed")
        async def typed(count: int, body: dict[str, int]) -> dict[str, Any]:
            return {"count": count, "body": body}
