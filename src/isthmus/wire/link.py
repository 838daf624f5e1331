"""One bridge↔edge WebSocket seen from either end: coalesced writes and body streams.

Frames queued with ``send`` are packed together into as few WebSocket messages as
possible (one per writer wake-up, split near ``MESSAGE_TARGET`` bytes). Streamed bodies
use credit-based flow control so that neither side buffers more than
``CREDIT_WINDOW`` chunks per stream, whatever the body size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from . import protocol as P

log = logging.getLogger("isthmus.link")


class LinkClosed(ConnectionError):
    """The WebSocket under a link went away."""


class InStream:
    """Chunks arriving for one request or response; credit is granted as they are read."""

    def __init__(self, link: Link, rid: int) -> None:
        self._link = link
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
            self._link.inbound.pop(self._rid, None)
            return None
        self._link.send({"t": P.CREDIT, "id": self._rid, "n": 1})
        return data


class OutStream:
    """Sends one body as chunk frames, waiting for credit from the receiver."""

    def __init__(self, link: Link, rid: int, window: int = P.CREDIT_WINDOW) -> None:
        self._link = link
        self._rid = rid
        self._credit = window
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self.ended = False

    def grant(self, n: int) -> None:
        self._credit += n
        self._wake.set()

    def abort(self, exc: BaseException) -> None:
        self._error = exc
        self._wake.set()

    async def write(self, data: bytes, end: bool = False) -> None:
        view = memoryview(data)
        size = len(view)
        pos = 0
        while pos < size or (end and not self.ended):
            while self._credit <= 0:
                if self._error is not None:
                    raise self._error
                self._wake.clear()
                await self._wake.wait()
            if self._error is not None:
                raise self._error
            piece = bytes(view[pos:pos + P.CHUNK_SIZE])
            pos += len(piece)
            last = end and pos >= size
            self._credit -= 1
            self._link.send({"t": P.CHUNK, "id": self._rid, "b": piece, "end": last})
            if last:
                self.ended = True
                self._link.outbound.pop(self._rid, None)
                break


class Link:
    """Frame queue + writer task + stream tables over one WebSocket."""

    def __init__(self, send_message: Callable[[bytes], Awaitable[None]], name: str = "") -> None:
        self.name = name
        self._send_message = send_message
        self._queue: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self.closed = False
        self.inbound: dict[int, InStream] = {}
        self.outbound: dict[int, OutStream] = {}
        self.last_seen = time.monotonic()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"link-writer-{self.name}")

    def send(self, frame: dict[str, Any]) -> None:
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
                        await self._send_message(P.pack(message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the socket broke; the reader will notice
            log.debug("link %s writer stopped: %s", self.name, exc)
            self.closed = True

    def open_inbound(self, rid: int) -> InStream:
        stream = InStream(self, rid)
        self.inbound[rid] = stream
        return stream

    def open_outbound(self, rid: int) -> OutStream:
        stream = OutStream(self, rid)
        self.outbound[rid] = stream
        return stream

    def on_chunk(self, frame: dict[str, Any]) -> None:
        stream = self.inbound.get(frame["id"])
        if stream is not None:
            stream.feed(frame.get("b") or b"", bool(frame.get("end")))

    def on_credit(self, frame: dict[str, Any]) -> None:
        stream = self.outbound.get(frame["id"])
        if stream is not None:
            stream.grant(int(frame.get("n", 1)))

    def drop_streams(self, rid: int, exc: BaseException) -> None:
        stream_in = self.inbound.pop(rid, None)
        if stream_in is not None:
            stream_in.fail(exc)
        stream_out = self.outbound.pop(rid, None)
        if stream_out is not None:
            stream_out.abort(exc)

    async def close(self) -> None:
        """Stop writing and fail every open stream."""
        if self.closed and self._writer is None:
            return
        self.closed = True
        exc = LinkClosed(f"link to {self.name} closed")
        for rid in list(self.inbound) + list(self.outbound):
            self.drop_streams(rid, exc)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            try:
                await writer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until queued frames have been handed to the socket."""
        deadline = time.monotonic() + timeout
        while self._queue and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def _split(batch: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Cut a batch into messages of about MESSAGE_TARGET bytes (bodies dominate the size)."""
    messages: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
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
