"""One end of a bridge↔edge link, the same class on both ends: frame table, writer, streams,
heartbeat, close.

Frames queued with ``send`` are packed together into as few WebSocket messages as
possible (one per writer wake-up, split near ``MESSAGE_TARGET`` bytes). Streamed bodies
use credit-based flow control so that neither side buffers more than ``CREDIT_WINDOW``
chunks per stream, whatever the body size. Incoming messages are dispatched through
one table of handlers; a handler that returns a coroutine runs as its own task, so a
slow one (a plugin's ``on_topology_change``) never holds up the frames behind it. A
frame that cannot be decoded, or a handler that fails, ends this link (``PeerFailed``)
— never the process; the edge then reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from ..errors import ProtocolError
from . import protocol as P

log = logging.getLogger("isthmus.wire")

Handler = Callable[[P.Frame], "Coroutine[Any, Any, None] | None"]
SendMessage = Callable[[bytes], Awaitable[None]]


class LinkClosed(ConnectionError):
    """The WebSocket under a link went away."""


class OpenCall(Protocol):
    """What a peer needs of a call in its table (``wire.call``'s Call and ServerCall)."""

    def abort(self, exc: BaseException) -> None: ...


class InStream:
    """Chunks arriving for one request or response; credit is granted as they are read."""

    def __init__(self, peer: Peer, rid: int) -> None:
        self._peer = peer
        self._rid = rid
        self._chunks: deque[bytes | None] = deque()
        self._ready = asyncio.Event()
        self._error: BaseException | None = None
        self.done = False

    def feed(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
        if end:
            self._chunks.append(None)
        self._ready.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._ready.set()

    @property
    def buffered(self) -> int:
        """Chunks received and not read yet (flow control keeps this ≤ the window)."""
        return sum(1 for c in self._chunks if c is not None)

    async def read(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            self._ready.clear()
            await self._ready.wait()
        data = self._chunks.popleft()
        if data is None:
            self.done = True
            self._peer.inbound.pop(self._rid, None)
            return None
        self._peer.send({"t": P.CREDIT, "id": self._rid, "n": 1})
        return data


class OutStream:
    """Sends one body as chunk frames, waiting for credit from the receiver."""

    def __init__(self, peer: Peer, rid: int, window: int = P.CREDIT_WINDOW) -> None:
        self._peer = peer
        self._rid = rid
        self.credit = window
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self.ended = False
        self.waits = 0  # how often the sender had to wait for credit

    def grant(self, n: int) -> None:
        self.credit += n
        self._wake.set()

    def abort(self, exc: BaseException) -> None:
        self._error = exc
        self._wake.set()

    async def write(self, data: bytes, end: bool = False) -> None:
        view = memoryview(data)
        size = len(view)
        pos = 0
        while pos < size or (end and not self.ended):
            if self.credit <= 0:
                self.waits += 1
            while self.credit <= 0:
                if self._error is not None:
                    raise self._error
                self._wake.clear()
                await self._wake.wait()
            if self._error is not None:
                raise self._error
            piece = bytes(view[pos:pos + P.CHUNK_SIZE])
            pos += len(piece)
            last = end and pos >= size
            self.credit -= 1
            self._peer.send({"t": P.CHUNK, "id": self._rid, "b": piece, "end": last})
            if last:
                self.ended = True
                self._peer.outbound.pop(self._rid, None)
                break


class Peer:
    """Frame queue + writer task + stream tables + dispatch table over one WebSocket."""

    def __init__(self, send_message: SendMessage, name: str = "", *,
                 handlers: Mapping[str, Handler] | None = None,
                 max_containers: int | None = None) -> None:
        self.name = name
        self._send_message = send_message
        self._queue: list[P.Frame] = []
        self._wake = asyncio.Event()
        self.closed = False
        self.inbound: dict[int, InStream] = {}
        self.outbound: dict[int, OutStream] = {}
        self.calls: dict[int, OpenCall] = {}  # open calls, either role (ids are unique per link)
        self.last_seen = time.monotonic()
        self.max_containers = max_containers
        # traffic over this link, read by the bridge's /metrics (plain ints: the hot path pays an add)
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.handlers: dict[str, Handler] = {
            P.CHUNK: self._on_chunk,
            P.CREDIT: self._on_credit,
            P.PING: self._on_ping,
            P.PONG: _ignore,
        }
        self.handlers.update(handlers or {})
        self.on_failure: Callable[[BaseException], None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- writing ---------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"peer-writer-{self.name}")

    def send(self, frame: P.Frame) -> None:
        """Queue a frame; it goes out with whatever else is queued (never blocks)."""
        if self.closed:
            return
        self._queue.append(frame)
        if not self._wake.is_set():
            self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while not self.closed:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    batch, self._queue = self._queue, []
                    for message in _split(batch):
                        data = P.pack(message)
                        self.frames_out += len(message)
                        self.bytes_out += len(data)
                        await self._send_message(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the socket broke; the reader will notice
            log.debug("peer %s writer stopped: %s", self.name, exc)
            self.closed = True

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until queued frames have been handed to the socket."""
        deadline = time.monotonic() + timeout
        while self._queue and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- reading -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Dispatch one WebSocket message; ProtocolError when it or a handler is bad."""
        self.last_seen = time.monotonic()
        frames = P.unpack(data, self.max_containers)
        self.frames_in += len(frames)
        self.bytes_in += len(data)
        for frame in frames:
            kind = frame["t"]
            handler = self.handlers.get(kind)
            if handler is None:
                raise ProtocolError(f"{self.name or 'peer'} sent an unexpected {kind} frame")
            try:
                result = handler(frame)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ProtocolError(f"{self.name or 'peer'} sent a malformed {kind} frame: {exc}") from exc
            if result is not None:
                self.spawn(result, kind)

    def spawn(self, coro: Coroutine[Any, Any, None], what: str = "task") -> None:
        """Run a handler's coroutine beside the reader; its failure ends this link only."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.error("handling a %s frame from %s failed: %r", what, self.name, exc, exc_info=exc)
                if self.on_failure is not None:
                    self.on_failure(exc)

        task.add_done_callback(done)

    def _on_chunk(self, frame: P.Frame) -> None:
        stream = self.inbound.get(frame["id"])
        if stream is not None:
            body = frame.get("b") or b""
            if not isinstance(body, bytes):
                raise TypeError("chunk bodies are bytes")
            stream.feed(body, bool(frame.get("end")))

    def _on_credit(self, frame: P.Frame) -> None:
        stream = self.outbound.get(frame["id"])
        if stream is not None:
            stream.grant(int(frame.get("n", 1)))

    def _on_ping(self, frame: P.Frame) -> None:
        self.send({"t": P.PONG, "ts": frame.get("ts")})

    # -- streams -------------------------------------------------------------------------------

    def open_inbound(self, rid: int) -> InStream:
        stream = InStream(self, rid)
        self.inbound[rid] = stream
        return stream

    def open_outbound(self, rid: int) -> OutStream:
        stream = OutStream(self, rid)
        self.outbound[rid] = stream
        return stream

    def drop_streams(self, rid: int, exc: BaseException) -> None:
        stream_in = self.inbound.pop(rid, None)
        if stream_in is not None:
            stream_in.fail(exc)
        stream_out = self.outbound.pop(rid, None)
        if stream_out is not None:
            stream_out.abort(exc)

    # -- liveness and the end -----------------------------------------------------------------

    async def heartbeat(self, interval: float, silence: float,
                        on_silent: Callable[[], Awaitable[None]]) -> None:
        """Ping every ``interval``; call ``on_silent`` once nothing came for ``silence`` s.

        A round in which this process itself woke late (its loop busy, e.g. admitting a
        reconnect storm) gives no verdict: the peer may have spoken while no one read.
        """
        while not self.closed:
            slept = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - slept - interval > 1.0:
                self.send({"t": P.PING, "ts": time.time()})
                continue
            if now - self.last_seen > silence:
                log.warning("%s silent for %.0fs; closing the link", self.name, silence)
                await on_silent()
                return
            self.send({"t": P.PING, "ts": time.time()})

    async def close(self) -> None:
        """Stop writing, fail every open stream, cancel handler tasks."""
        if self.closed and self._writer is None:
            return
        self.closed = True
        exc = LinkClosed(f"link to {self.name} closed")
        for call in list(self.calls.values()):
            call.abort(exc)
        for rid in list(self.inbound) + list(self.outbound):
            self.drop_streams(rid, exc)
        for task in list(self._tasks):
            task.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            try:
                await writer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass


def _ignore(frame: P.Frame) -> None:
    return None


def memory_pair(name: str) -> tuple[Peer, Peer]:
    """Two peers joined in process (no socket): bridge-hosted plugins, and fast unit tests.

    Each side's writer hands whole messages to the other side's ``receive``; a bad message
    closes both, as a broken socket would.
    """
    a: Peer
    b: Peer

    async def to_b(data: bytes) -> None:
        deliver(b, data)

    async def to_a(data: bytes) -> None:
        deliver(a, data)

    def deliver(peer: Peer, data: bytes) -> None:
        try:
            peer.receive(data)
        except ProtocolError as exc:
            log.error("in-memory link %s: %s", name, exc)
            for side in (a, b):
                if side.on_failure is not None:
                    side.on_failure(exc)

    a, b = Peer(to_b, f"{name}/client"), Peer(to_a, f"{name}/server")
    return a, b


def _split(batch: list[P.Frame]) -> list[list[P.Frame]]:
    """Cut a batch into messages of about MESSAGE_TARGET bytes (bodies dominate the size)."""
    messages: list[list[P.Frame]] = []
    current: list[P.Frame] = []
    size = 0
    for frame in batch:
        body = frame.get("b") or frame.get("d")
        frame_size = 64 + (len(body) if isinstance(body, (bytes, bytearray)) else 0)
        if current and size + frame_size > P.MESSAGE_TARGET:
            messages.append(current)
            current, size = [], 0
        current.append(frame)
        size += frame_size
    if current:
        messages.append(current)
    return messages
