"""The edge: dials out to the bridge, announces its plugins, serves forwarded requests.

Frames are dispatched through one table (``_handlers``). The edge reconnects with
capped exponential back-off; a refusal (bad token, version) backs off too, never spins.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from ..runtime.dispatch import prepare, serve_request
from ..runtime.host import PluginHost
from ..types import Principal
from ..wire import protocol as P
from ..wire.link import Link

log = logging.getLogger("isthmus.edge")

PING_INTERVAL = 15.0
SILENCE_LIMIT = 45.0
MAX_BACKOFF = 30.0


class EdgeService:
    """One edge process's connection to its bridge."""

    def __init__(self, host: PluginHost, bridge_url: str, name: str, token: str | None, *,
                 ca_file: str | None = None, insecure_tls: bool = False) -> None:
        self.host = host
        self.bridge_url = bridge_url.rstrip("/")
        self.name = name
        self.token = token
        self.ca_file = ca_file
        self.insecure_tls = insecure_tls
        self.link: Link | None = None
        self.key: str | None = None  # the bridge's key for our last connection: proves a reconnect is us
        self.connected = asyncio.Event()
        self.last_refusal: str | None = None
        self._stop = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._gone: dict[int, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._ws: ClientConnection | None = None
        self._closing: asyncio.Future[None] | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            P.WELCOME: self._on_welcome,
            P.REFUSE: self._on_refuse,
            P.REQUEST: self._on_request,
            P.CHUNK: self._on_chunk,
            P.CREDIT: self._on_credit,
            P.CANCEL: self._on_cancel,
            P.TOPOLOGY: self._on_topology,
            P.PING: self._on_ping,
            P.PONG: lambda f: None,
            P.SHUTDOWN: self._on_shutdown,
        }
        host.notify_sink = self.notify
        host.on_manifest_change = self._send_manifest
        for plugin in host.active():
            plugin._notify_sink = self.notify

    # -- notifications (any thread) -----------------------------------------------------------

    def notify(self, plugin: str, topic: str, data: Any, owner: Principal | None) -> None:
        frame = {"t": P.NOTIFY, "plugin": plugin, "topic": topic,
                 "d": orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS),
                 "ow": owner.to_wire() if owner else None}
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            if self.link is not None:
                self.link.send(frame)
        else:
            self._loop.call_soon_threadsafe(self._send_later, frame)

    def _send_later(self, frame: dict[str, Any]) -> None:
        if self.link is not None:
            self.link.send(frame)

    def _send_manifest(self) -> None:
        if self.link is not None:
            self.link.send({"t": P.MANIFEST, "plugins": self.host.manifests()})

    # -- connection loop ------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.bridge_url.startswith("wss://"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def run(self) -> None:
        """Connect, serve, reconnect — until ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        backoff = 0.5
        url = f"{self.bridge_url}/_edge/connect"
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                async with websockets.connect(url, max_size=P.MAX_MESSAGE, ssl=self._ssl(),
                                              ping_interval=None, open_timeout=10,
                                              compression=None) as ws:
                    await self._session(ws)
            except websockets.exceptions.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                level = logging.INFO if code in (1000, 1001, 1012) or self._stop.is_set() else logging.WARNING
                log.log(level, "connection to %s closed (%s)", self.bridge_url, code)
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as exc:
                log.warning("bridge %s unreachable: %s", self.bridge_url, exc)
            except asyncio.CancelledError:
                raise
            if self._stop.is_set():
                break
            if time.monotonic() - started > 30:
                backoff = 0.5  # it was a healthy connection; reconnect quickly
            delay = backoff * (0.75 + random.random() / 2)
            if self.last_refusal:
                delay = max(delay, 5.0)
            log.info("reconnecting to %s in %.1fs", self.bridge_url, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(self, ws: ClientConnection) -> None:
        link = Link(ws.send, name="bridge")
        self.link = link
        self._ws = ws
        link.start()
        hello = {"t": P.HELLO, "v": P.PROTOCOL_VERSION, "name": self.name, "token": self.token,
                 "plugins": self.host.manifests(), "host": socket.gethostname(), "pid": os.getpid()}
        if self.key:
            hello["resume"] = self.key
        link.send(hello)
        pinger = asyncio.create_task(self._pinger(link, ws), name="heartbeat")
        try:
            async for message in ws:
                link.last_seen = time.monotonic()
                if isinstance(message, str):
                    log.warning("ignoring text message from bridge")
                    continue
                for frame in P.unpack(message):
                    handler = self._handlers.get(frame["t"])
                    if handler is not None:
                        result = handler(frame)
                        if asyncio.iscoroutine(result):
                            await result
        finally:
            pinger.cancel()
            self.connected.clear()
            self.link = None
            self._ws = None
            for task in list(self._tasks.values()):
                task.cancel()
            self._tasks.clear()
            self._gone.clear()
            await link.close()

    async def _pinger(self, link: Link, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if time.monotonic() - link.last_seen > SILENCE_LIMIT:
                log.warning("bridge silent for %.0fs; reconnecting", SILENCE_LIMIT)
                await ws.close(code=1011, reason="bridge silent")
                return
            link.send({"t": P.PING, "ts": time.time()})

    # -- frame handlers -------------------------------------------------------------------

    async def _on_welcome(self, frame: dict[str, Any]) -> None:
        self.last_refusal = None
        key = frame.get("key")
        self.key = key if isinstance(key, str) else None
        self.connected.set()
        log.info("connected to bridge %s as %s", self.bridge_url, self.name)
        await self.host.set_topology(frame.get("edges") or {})

    async def _on_refuse(self, frame: dict[str, Any]) -> None:
        self.last_refusal = str(frame.get("reason"))
        log.error("bridge refused this edge: %s", self.last_refusal)

    def _on_request(self, frame: dict[str, Any]) -> None:
        assert self.link is not None
        rid = frame["id"]
        path: str = frame["p"]
        plugin = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        failure = self.host.failed_plugin(plugin)
        if failure:
            self.link.send({"t": P.RESPONSE, "id": rid, "st": 503,
                            "h": [[b"content-type", b"application/json"]],
                            "b": orjson.dumps({"detail": f"plugin {plugin} is not available: {failure}"})})
            return
        gone = asyncio.Event()
        self._gone[rid] = gone
        instream = prepare(self.link, frame)
        task = asyncio.create_task(serve_request(self.host.app, frame, self.link, instream, gone))
        self._tasks[rid] = task
        task.add_done_callback(lambda _t, rid=rid: (self._tasks.pop(rid, None), self._gone.pop(rid, None)))

    def _on_chunk(self, frame: dict[str, Any]) -> None:
        if self.link is not None:
            self.link.on_chunk(frame)

    def _on_credit(self, frame: dict[str, Any]) -> None:
        if self.link is not None:
            self.link.on_credit(frame)

    def _on_cancel(self, frame: dict[str, Any]) -> None:
        rid = frame["id"]
        gone = self._gone.get(rid)
        if gone is not None:
            gone.set()
        task = self._tasks.get(rid)
        if task is not None:
            task.cancel()

    async def _on_topology(self, frame: dict[str, Any]) -> None:
        await self.host.set_topology(frame.get("edges") or {})

    def _on_ping(self, frame: dict[str, Any]) -> None:
        if self.link is not None:
            self.link.send({"t": P.PONG, "ts": frame.get("ts")})

    def _on_shutdown(self, frame: dict[str, Any]) -> None:
        log.warning("bridge asked this edge to stop: %s", frame.get("reason"))
        self.stop()

    def stop(self) -> None:
        """Leave the bridge: close the socket; ``run`` then returns."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            task = asyncio.ensure_future(ws.close(code=1001, reason="edge stopping"))
            self._closing = task


async def run_edge(host: PluginHost, service: EdgeService) -> None:
    """Start plugins, serve until stopped, shut plugins down in reverse order."""
    await host.startup()
    try:
        await service.run()
    finally:
        await host.shutdown()
