"""Connected edges: enrolment, the per-edge link, request bookkeeping, topology.

An edge connects to ``/_edge/connect``, sends ``hello`` with its enrolment token and
plugin manifest, and is welcomed or refused. A second connection under the same name
with a valid token replaces the first (the old one may be half-open), never the other
way round.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..errors import ProtocolError
from ..link import Link, LinkClosed
from ..types import Principal
from .auth import TokenStore
from .events import EventBus

log = logging.getLogger("isthmus.bridge.edges")

EDGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESERVED_NAMES = frozenset({"edge", "bridge", "events", "menu", "healthz", "auth", "static", "ui",
                            "api", "metrics", "plugins", "explorer", "favicon.ico", "_edge"})
HELLO_TIMEOUT = 10.0
PING_INTERVAL = 15.0
SILENCE_LIMIT = 45.0


class EdgeGone(ConnectionError):
    """The edge disconnected while a request was in flight."""


class EdgeLink:
    """The bridge's side of one connected edge."""

    def __init__(self, name: str, link: Link, manifest: dict[str, Any], info: dict[str, Any]) -> None:
        self.name = name
        self.link = link
        self.plugins: dict[str, Any] = manifest
        self.info = info
        self.connected_at = time.time()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.requests = 0
        self.close_reason: str | None = None
        self.closer: Callable[[int, str], Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {"plugins": self.plugins, "connected_at": self.connected_at,
                "host": self.info.get("host"), "requests": self.requests}

    def fail_all(self, why: str) -> None:
        exc = EdgeGone(why)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()


class EdgeRegistry:
    def __init__(self, tokens: TokenStore, bus: EventBus, *, max_body: int) -> None:
        self.tokens = tokens
        self.bus = bus
        self.max_body = max_body
        self.edges: dict[str, EdgeLink] = {}
        self.ids = itertools.count(1)
        self.topology_listeners: list[Callable[[dict[str, Any]], Any]] = []
        self.local_topology: Callable[[], dict[str, Any]] = dict  # bridge-hosted plugins
        self._background: set[asyncio.Future[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def get(self, name: str) -> EdgeLink | None:
        return self.edges.get(name)

    def topology(self) -> dict[str, Any]:
        edges = {name: e.describe() for name, e in sorted(self.edges.items())}
        local = self.local_topology()
        if local:
            edges = {"bridge": {"plugins": local, "connected_at": None, "host": None}, **edges}
        return edges

    def _announce(self) -> None:
        topo = self.topology()
        self.bus.topology(topo)
        for edge in self.edges.values():
            edge.link.send({"t": P.TOPOLOGY, "edges": topo})
        for listener in self.topology_listeners:
            result = listener(topo)
            if asyncio.iscoroutine(result):
                self._spawn(result)

    async def disconnect(self, name: str, reason: str = "disconnected by an admin") -> bool:
        edge = self.edges.get(name)
        if edge is None:
            return False
        edge.link.send({"t": P.SHUTDOWN, "reason": reason})
        await edge.link.flush()
        if edge.closer is not None:
            await edge.closer(1000, reason)
        return True

    # -- the WebSocket handler (raw ASGI) --------------------------------------------------

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        closed = False

        async def send_bytes(data: bytes) -> None:
            await send({"type": "websocket.send", "bytes": data})

        async def close(code: int = 1000, reason: str = "") -> None:
            nonlocal closed
            if not closed:
                closed = True
                try:
                    await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
                except Exception:  # noqa: BLE001 - already gone
                    pass

        link = Link(send_bytes, name="?")
        link.start()
        edge: EdgeLink | None = None
        try:
            hello = await asyncio.wait_for(self._read_hello(receive), HELLO_TIMEOUT)
            edge = self._enrol(hello, link)
            if edge is None:
                await link.flush()
                await close(1008, "refused")
                return
            edge.closer = close
            pinger = asyncio.create_task(self._pinger(edge, close))
            try:
                await self._read_loop(edge, receive)
            finally:
                pinger.cancel()
        except (TimeoutError, ProtocolError) as exc:
            log.warning("edge connection dropped: %s", exc)
            await close(1002, str(exc))
        finally:
            await link.close()
            if edge is not None:
                edge.fail_all(f"edge {edge.name} disconnected")
                if self.edges.get(edge.name) is edge:
                    del self.edges[edge.name]
                    log.info("edge %s disconnected", edge.name)
                    self._announce()
            await close()

    async def _read_hello(self, receive: Any) -> dict[str, Any]:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                raise ProtocolError("edge left before hello")
            data = message.get("bytes")
            if data is None:
                raise ProtocolError("edges speak binary msgpack frames")
            frames = P.unpack(data)
            if frames and frames[0]["t"] == P.HELLO:
                return frames[0]
            raise ProtocolError("the first frame must be hello")

    def _refuse(self, link: Link, reason: str, retry: float = 30.0) -> None:
        log.warning("edge refused: %s", reason)
        link.send({"t": P.REFUSE, "reason": reason, "retry": retry})

    def _enrol(self, hello: dict[str, Any], link: Link) -> EdgeLink | None:
        name = str(hello.get("name") or "")
        if hello.get("v") != P.PROTOCOL_VERSION:
            self._refuse(link, f"protocol version {hello.get('v')} is not {P.PROTOCOL_VERSION}; "
                               "upgrade the edge or the bridge so they match")
            return None
        if not EDGE_NAME.match(name) or name in RESERVED_NAMES:
            self._refuse(link, f"edge name {name!r} is not allowed (letters, digits, '.', '_', '-'; "
                               f"not one of {', '.join(sorted(RESERVED_NAMES))})")
            return None
        if not self.tokens.edge_allowed(hello.get("token"), name):
            self._refuse(link, f"enrolment token not valid for edge {name!r}")
            return None
        plugins = hello.get("plugins")
        if not isinstance(plugins, dict):
            self._refuse(link, "hello carries no plugin manifest")
            return None
        link.name = name
        edge = EdgeLink(name, link, plugins, {"host": hello.get("host"), "pid": hello.get("pid")})
        old = self.edges.get(name)
        self.edges[name] = edge
        if old is not None:
            log.warning("edge %s reconnected; replacing its previous connection", name)
            old.fail_all(f"edge {name} reconnected")
            if old.closer is not None:
                self._spawn(old.closer(4000, "replaced by a new connection"))
        link.send({"t": P.WELCOME, "edges": self.topology(), "max_body": self.max_body})
        log.info("edge %s connected with plugins %s", name, ", ".join(plugins))
        self._announce()
        return edge

    async def _pinger(self, edge: EdgeLink, close: Callable[..., Any]) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if time.monotonic() - edge.link.last_seen > SILENCE_LIMIT:
                log.warning("edge %s silent for %.0fs; dropping it", edge.name, SILENCE_LIMIT)
                await close(1011, "silent")
                return
            edge.link.send({"t": P.PING, "ts": time.time()})

    async def _read_loop(self, edge: EdgeLink, receive: Any) -> None:
        link = edge.link
        handlers = {
            P.RESPONSE: self._on_response,
            P.CHUNK: lambda e, f: e.link.on_chunk(f),
            P.CREDIT: lambda e, f: e.link.on_credit(f),
            P.CANCEL: self._on_cancel,
            P.NOTIFY: self._on_notify,
            P.MANIFEST: self._on_manifest,
            P.PING: lambda e, f: e.link.send({"t": P.PONG, "ts": f.get("ts")}),
            P.PONG: lambda e, f: None,
        }
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            link.last_seen = time.monotonic()
            data = message.get("bytes")
            if data is None:
                raise ProtocolError(f"edge {edge.name} sent a text message")
            for frame in P.unpack(data):
                handler = handlers.get(frame["t"])
                if handler is None:
                    raise ProtocolError(f"edge {edge.name} sent an unexpected {frame['t']} frame")
                try:
                    handler(edge, frame)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ProtocolError(f"edge {edge.name} sent a malformed {frame['t']} frame: {exc}") from exc
            await asyncio.sleep(0)  # a big batch must not starve the event-stream writers

    def _on_response(self, edge: EdgeLink, frame: dict[str, Any]) -> None:
        rid = frame["id"]
        fut = edge.pending.pop(rid, None)
        if fut is None or fut.done():
            return
        if frame.get("s"):
            edge.link.open_inbound(rid)
        fut.set_result(frame)

    def _on_cancel(self, edge: EdgeLink, frame: dict[str, Any]) -> None:
        rid = frame["id"]
        edge.link.drop_streams(rid, LinkClosed("the edge aborted the response"))
        fut = edge.pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(EdgeGone("the edge aborted the request"))

    def _on_notify(self, edge: EdgeLink, frame: dict[str, Any]) -> None:
        owner = Principal.from_wire(frame.get("ow"))
        data = frame.get("d")
        if not isinstance(data, bytes) or b"\n" in data or b"\r" in data:
            raise ValueError("notify data must be single-line JSON bytes")
        self.bus.notification(edge.name, str(frame["plugin"]), str(frame["topic"]), data,
                              owner.name if owner else None)

    def _on_manifest(self, edge: EdgeLink, frame: dict[str, Any]) -> None:
        plugins = frame.get("plugins")
        if not isinstance(plugins, dict):
            raise ValueError("manifest must carry a plugins map")
        edge.plugins = plugins
        self._announce()
