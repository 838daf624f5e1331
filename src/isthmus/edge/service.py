"""The edge: dials out to the bridge, announces its plugins, serves forwarded requests.

One ``Peer`` per connection carries the frames; its table holds the edge's own frames
(welcome, refuse, topology, shutdown) and the dispatcher's (req, cancel). A bad frame or
a failing handler closes that connection only: the edge logs it, reconnects and keeps its
plugins. The edge reconnects with capped, jittered exponential back-off; a refusal (bad
token, version, name taken) backs off too, never spins.
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
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from ..errors import ProtocolError
from ..runtime.dispatch import Dispatcher
from ..runtime.host import PluginHost
from ..types import Principal
from ..wire import protocol as P
from ..wire.peer import Handler, Peer
from .calls import BridgeLinkCalls

log = logging.getLogger("isthmus.edge")

PING_INTERVAL = 15.0
SILENCE_LIMIT = 45.0
MAX_BACKOFF = 30.0
# A bridge admitting a reconnect storm answers handshakes late; giving up sooner only makes
# it redo the work (measured with 10,000 edges: a third of them timed out at 10 s).
OPEN_TIMEOUT = 30.0


class EdgeService:
    """One edge process's connection to its bridge."""

    def __init__(self, host: PluginHost, bridge_url: str | list[str], name: str, token: str | None, *,
                 ca_file: str | None = None, insecure_tls: bool = False) -> None:
        self.host = host
        urls = [bridge_url] if isinstance(bridge_url, str) else list(bridge_url)
        if not urls:
            raise ValueError("an edge needs at least one bridge URL")
        self.bridge_urls = [u.rstrip("/") for u in urls]
        self._url_index = 0
        self.name = name
        self.token = token
        self.ca_file = ca_file
        self.insecure_tls = insecure_tls
        self.peer: Peer | None = None
        self.key: str | None = None  # the bridge's key for our last connection: proves a reconnect is us
        self.connected = asyncio.Event()
        self.last_refusal: str | None = None
        self.dispatcher = Dispatcher(host.app, host.failed_plugin)
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._ws: ClientConnection | None = None
        self._closing: asyncio.Future[None] | None = None
        self.watching = host.wants_topology()
        host.topology_requester = self._request_topology
        host.notify_sink = self.notify
        host.on_manifest_change = self._send_manifest
        for plugin in host.active():
            plugin._notify_sink = self.notify
        self.max_body = P.INLINE_BODY_MAX  # until the bridge's welcome says its limit
        self.calls = BridgeLinkCalls(name, lambda: self.peer if self.connected.is_set() else None, token,
                                     self.bridge_urls, lambda: self.max_body)
        host.edge_calls = self.calls  # Plugin.edge_calls: this edge's children, through the bridge

    def _handlers(self, peer: Peer) -> dict[str, Handler]:
        return {
            P.WELCOME: self._on_welcome,
            P.REFUSE: self._on_refuse,
            P.TOPOLOGY: self._on_topology,
            P.SHUTDOWN: self._on_shutdown,
            **self.dispatcher.handlers(peer),
            **BridgeLinkCalls.handlers(peer),  # answers to this edge's own calls (edge/calls.py)
        }

    # -- notifications (any thread) -----------------------------------------------------------

    def notify(self, plugin: str, topic: str, data: Any, owner: Principal | None) -> None:
        frame = {"t": P.NOTIFY, "plugin": plugin, "topic": topic,
                 "d": orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS),
                 "ow": owner.to_wire() if owner else None}
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            if self.peer is not None:
                self.peer.send(frame)
        else:
            self._loop.call_soon_threadsafe(self._send_later, frame)

    def _send_later(self, frame: P.Frame) -> None:
        if self.peer is not None:
            self.peer.send(frame)

    def _send_manifest(self) -> None:
        if self.peer is not None:
            self.peer.send({"t": P.MANIFEST, "plugins": self.host.manifests()})

    # -- connection loop ------------------------------------------------------------------

    @property
    def bridge_url(self) -> str:
        """The bridge this edge talks to now (or will try next)."""
        return self.bridge_urls[self._url_index]

    def _next_bridge(self) -> None:
        """After a failed attempt or a lost link, try the next bridge (several share the edges)."""
        self._url_index = (self._url_index + 1) % len(self.bridge_urls)

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.bridge_url.startswith("wss://"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def run(self) -> None:
        """Connect, serve, reconnect — until ``stop()``.

        Each failed attempt or lost link moves on to the next bridge URL. The wait between
        attempts is drawn at random below a cap that doubles per failure (to 30 s), so a fleet
        that lost its bridge at once does not come back in step.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        backoff = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            url = f"{self.bridge_url}/_edge/connect"
            try:
                async with websockets.connect(url, max_size=P.MAX_MESSAGE, ssl=self._ssl(),
                                              ping_interval=None, open_timeout=OPEN_TIMEOUT,
                                              compression=None) as ws:
                    await self._session(ws)
            except websockets.exceptions.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                level = logging.INFO if code in (1000, 1001, 1012) or self._stop.is_set() else logging.WARNING
                log.log(level, "connection to %s closed (%s)", self.bridge_url, code)
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as exc:
                log.warning("bridge %s unreachable: %s", self.bridge_url, exc)
            if self._stop.is_set():
                break
            if time.monotonic() - started > 30:
                backoff = 0.5  # it was a healthy connection; reconnect quickly
            delay = max(0.05, backoff * random.random())
            if self.last_refusal:
                delay = max(delay, 5.0)
            self._next_bridge()
            log.info("reconnecting to %s in %.1fs", self.bridge_url, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
            if len(self.bridge_urls) == 1 or self._url_index == 0:
                backoff = min(backoff * 2, MAX_BACKOFF)  # every bridge was tried once more

    async def _session(self, ws: ClientConnection) -> None:
        peer = Peer(ws.send, name="bridge")
        peer.handlers.update(self._handlers(peer))
        def on_failure(exc: BaseException) -> None:
            self._closing = asyncio.ensure_future(ws.close(code=1011, reason="edge could not handle a frame"))

        peer.on_failure = on_failure
        self.peer = peer
        self._ws = ws
        peer.start()
        hello: P.Frame = {"t": P.HELLO, "v": P.PROTOCOL_VERSION, "name": self.name, "token": self.token,
                          "plugins": self.host.manifests(), "host": socket.gethostname(), "pid": os.getpid()}
        if self.key:
            hello["resume"] = self.key
        if self.watching:
            hello["watch"] = True
        peer.send(hello)

        async def silent() -> None:
            await ws.close(code=1011, reason="bridge silent")

        pinger = asyncio.create_task(peer.heartbeat(PING_INTERVAL, SILENCE_LIMIT, silent), name="heartbeat")
        try:
            async for message in ws:
                if isinstance(message, str):
                    log.warning("ignoring a text message from the bridge")
                    continue
                try:
                    peer.receive(message)
                except ProtocolError as exc:
                    log.error("bad frame from the bridge (%s); reconnecting", exc)
                    await ws.close(code=1002, reason="bad frame")
                    break
        finally:
            pinger.cancel()
            self.connected.clear()
            self.host.topology_lost()
            self.peer = None
            self._ws = None
            await peer.close()

    # -- frame handlers -------------------------------------------------------------------

    def _on_welcome(self, frame: P.Frame) -> None:
        self.last_refusal = None
        key = frame.get("key")
        self.key = key if isinstance(key, str) else None
        if isinstance(frame.get("max_body"), int):
            self.max_body = frame["max_body"]
        self.connected.set()
        log.info("connected to bridge %s as %s", self.bridge_url, self.name)

    def _on_refuse(self, frame: P.Frame) -> None:
        self.last_refusal = str(frame.get("reason"))
        log.error("bridge refused this edge: %s", self.last_refusal)

    def _on_topology(self, frame: P.Frame) -> None:
        if not isinstance(frame.get("joined"), dict) or not isinstance(frame.get("left"), dict | list):
            raise TypeError("a topology frame carries joined and left maps")
        self.host.apply_topology(frame)

    async def _request_topology(self) -> None:
        """A plugin asked for the topology (``get_topology``): watch it from now on."""
        self.watching = True
        if self.peer is not None and self.connected.is_set():
            self.peer.send({"t": P.WATCH, "on": True})

    def _on_shutdown(self, frame: P.Frame) -> None:
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
