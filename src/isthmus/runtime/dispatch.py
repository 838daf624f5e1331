"""Serve calls by running the host's ASGI app in process (no loopback HTTP).

``Dispatcher`` is the answering side's frame table (``req`` and ``cancel``) for one
peer: the edge installs it on its WebSocket peer, the bridge on the in-memory peer of
its own plugins. Each ``req`` becomes a ``ServerCall`` served in its own task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..logs import request_id
from ..types import Role, current_principal
from ..wire import protocol as P
from ..wire.call import CallAborted, ServerCall
from ..wire.peer import Handler, Peer

log = logging.getLogger("isthmus.dispatch")

METRICS_PATH = "/_edge/metrics"  # the one path a ``metrics`` principal may call
ErrorSink = Callable[[str, int], None]  # (plugin, 5xx status): runtime.metrics.EdgeMetrics.plugin_error


class Dispatcher:
    """Turns ``req`` frames into tasks that run ``app``; ``cancel`` frames stop them."""

    def __init__(self, app: Any, failed_plugin: Any) -> None:
        self.app = app
        self.failed_plugin = failed_plugin  # plugin id -> load error, or None
        metrics = getattr(getattr(getattr(app, "state", None), "isthmus_host", None), "metrics", None)
        self.errors: ErrorSink | None = metrics.plugin_error if metrics is not None else None

    def handlers(self, peer: Peer) -> dict[str, Handler]:
        def on_request(frame: P.Frame) -> None:
            self.start(peer, frame)

        def on_cancel(frame: P.Frame) -> None:
            call = peer.calls.get(frame["id"])
            if isinstance(call, ServerCall):
                call.cancel()

        return {P.REQUEST: on_request, P.CANCEL: on_cancel}

    def start(self, peer: Peer, frame: P.Frame) -> None:
        if not isinstance(frame.get("p"), str) or not isinstance(frame.get("m"), str):
            raise ValueError("a req frame needs a method and a path")
        call = ServerCall(peer, frame)
        plugin = frame["p"].split("/", 2)[1] if frame["p"].count("/") >= 1 else ""
        who = call.principal
        if who is not None and who.role == Role.metrics and frame["p"] != METRICS_PATH:
            call.error(403, f"a metrics token may only read {METRICS_PATH}; use a viewer or user token")
            call.finish()
            return
        failure = self.failed_plugin(plugin)
        if failure:
            if self.errors is not None:
                self.errors(plugin, 503)
            call.error(503, f"plugin {plugin} is not available: {failure}")
            call.finish()
            return
        call.task = asyncio.create_task(serve(self.app, call, self.errors))


async def serve(app: Any, call: ServerCall, errors: ErrorSink | None = None) -> None:
    """Run ``app`` for one call and send its response (and chunk) frames; ``errors`` counts 5xx answers."""
    frame = call.frame
    status = 0
    token = current_principal.set(call.principal)
    rid = frame.get("x") if isinstance(frame.get("x"), str) else None
    rid_token = request_id.set(rid)
    path: str = frame["p"]

    async def receive() -> dict[str, Any]:
        try:
            body, more = await call.read()
        except CallAborted:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            call.start(status, [[k, v] for k, v in message.get("headers", [])])
        elif kind == "http.response.body":
            await call.write(message.get("body", b""), message.get("more_body", False))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": frame["m"],
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": frame.get("q") or b"",
        "root_path": "",
        "headers": [(k, v) for k, v in frame.get("h") or ()],
        "client": ("bridge", 0),
        "server": ("edge", 0),
        "state": {"principal": call.principal, "request_id": rid},
    }
    try:
        await app(scope, receive, send)
        if not call.started:
            status = 500
            call.error(500, "the plugin sent no response")
        else:
            await call.end()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("request %s %s failed", frame["m"], path)
        status = 500
        call.error(500, f"{type(exc).__name__}: {exc}")
    finally:
        request_id.reset(rid_token)
        current_principal.reset(token)
        call.finish()
        if status >= 500 and errors is not None:
            errors(path.split("/", 2)[1] if path.count("/") >= 1 else "", status)
