"""One call: a request from its ``req`` frame to the end of its response body.

A call is the only owner of a request's state — its id, deadline, cancel, the streams
of its bodies and their credit — on each end of a link. The bridge's proxy holds a
``Call`` (the asking side), the edge's dispatch a ``ServerCall`` (the answering side);
bridge-hosted plugins use the same two over an in-memory link. A call leaves its
peer's table exactly once, in ``finish``, whatever ended it.
"""

from __future__ import annotations

import asyncio

from ..types import Principal
from . import protocol as P
from .peer import InStream, LinkClosed, OutStream, Peer


class CallAborted(ConnectionError):
    """The other end cancelled the call, or the link under it closed."""


class Call:
    """The asking side: send a request, await its response, read the response body."""

    __slots__ = ("answered", "deadline", "finished", "id", "outbound", "peer", "response")

    def __init__(self, peer: Peer, rid: int, deadline: float) -> None:
        self.peer = peer
        self.id = rid
        self.deadline = deadline
        self.response: asyncio.Future[P.Frame] = asyncio.get_running_loop().create_future()
        self.outbound: OutStream | None = None
        self.answered = False
        self.finished = False
        peer.calls[rid] = self

    def send(self, frame: P.Frame, streamed: bool) -> OutStream | None:
        """Send the ``req`` frame; a streamed body then goes to the returned stream."""
        frame["id"] = self.id
        frame["dl"] = self.deadline
        if streamed:
            frame["s"] = True
            self.outbound = self.peer.open_outbound(self.id)
        self.peer.send(frame)
        return self.outbound

    # frames from the answering side (called by the peer's handlers)
    def on_response(self, frame: P.Frame) -> None:
        if self.response.done():
            return
        if frame.get("s"):
            self.peer.open_inbound(self.id)
        self.response.set_result(frame)

    def on_cancel(self) -> None:
        self.peer.drop_streams(self.id, LinkClosed("the edge aborted the response"))
        self.fail(CallAborted("the edge aborted the request"))

    def fail(self, exc: BaseException) -> None:
        if not self.response.done():
            self.response.set_exception(exc)

    def abort(self, exc: BaseException) -> None:
        """The link closed under the call."""
        self.fail(exc)

    def body(self) -> InStream | None:
        """The response body's stream, when it is streamed."""
        return self.peer.inbound.get(self.id)

    def finish(self) -> None:
        """Leave the peer's table; tell the other side to stop unless the call completed."""
        if self.finished:
            return
        self.finished = True
        peer = self.peer
        if peer.calls.get(self.id) is self:
            del peer.calls[self.id]
        rid = self.id
        if not self.answered or rid in peer.outbound or rid in peer.inbound:
            peer.send({"t": P.CANCEL, "id": rid})
        peer.drop_streams(rid, ConnectionAbortedError("request finished"))


class ServerCall:
    """The answering side: read the request body, send the response, notice a cancel."""

    __slots__ = (
        "_body_sent",
        "_headers",
        "_pending",
        "_status",
        "finished",
        "frame",
        "gone",
        "id",
        "inbound",
        "outbound",
        "peer",
        "principal",
        "task",
    )

    def __init__(self, peer: Peer, frame: P.Frame) -> None:
        self.peer = peer
        self.frame = frame
        self.id: int = frame["id"]
        self.principal = Principal.from_wire(frame.get("pr"))
        # the request body's stream is opened at once, before any of its chunks is dispatched
        self.inbound: InStream | None = peer.open_inbound(self.id) if frame.get("s") else None
        self.outbound: OutStream | None = None
        self.gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self._pending = bytearray()
        self._body_sent = False
        self._status: int | None = None
        self._headers: list[P.Header] = []
        peer.calls[self.id] = self

    async def read(self) -> tuple[bytes, bool]:
        """(the next piece of the request body, more to come); waits for a cancel at the end."""
        if self.inbound is not None and not self.inbound.done:
            data = await self.inbound.read()
            return data or b"", data is not None
        if not self._body_sent and self.inbound is None:
            self._body_sent = True
            return self.frame.get("b") or b"", False
        await self.gone.wait()
        raise CallAborted("the caller went away")

    def start(self, status: int, headers: list[P.Header]) -> None:
        self._status, self._headers = status, headers

    @property
    def started(self) -> bool:
        return self._status is not None

    async def write(self, body: bytes, more: bool) -> None:
        """Send response body: inline in the ``res`` frame when small, else as chunks."""
        if self.finished:
            return
        assert self._status is not None, "start() first"
        if self.outbound is None:
            if len(self._pending) + len(body) <= P.INLINE_BODY_MAX:
                if not more:
                    self._respond(bytes(self._pending) + body if self._pending else body)
                    return
                self._pending.extend(body)
                return
            self.peer.send({"t": P.RESPONSE, "id": self.id, "st": self._status, "h": self._headers, "s": True})
            self.outbound = self.peer.open_outbound(self.id)
            if self._pending:
                await self.outbound.write(bytes(self._pending))
                self._pending.clear()
        await self.outbound.write(body, end=not more)
        if not more:
            self.finished = True

    def _respond(self, body: bytes) -> None:
        self.peer.send({"t": P.RESPONSE, "id": self.id, "st": self._status, "h": self._headers, "b": body})
        self.finished = True

    async def end(self) -> None:
        """The app returned: complete whatever response it began."""
        if self.finished:
            return
        if self._status is not None and self.outbound is None:
            self._respond(bytes(self._pending))
        elif self.outbound is not None:
            await self.outbound.write(b"", end=True)
            self.finished = True

    def error(self, status: int, detail: str) -> None:
        """Answer with a JSON error, or abort a response that had already begun."""
        import orjson

        if self._status is None:
            self._status, self._headers = status, [[b"content-type", b"application/json"]]
            self._respond(orjson.dumps({"detail": detail}))
        else:
            self.peer.drop_streams(self.id, CallAborted(detail))
            self.peer.send({"t": P.CANCEL, "id": self.id})
            self.finished = True

    def abort(self, exc: BaseException) -> None:
        self.cancel()

    def cancel(self) -> None:
        """The asking side is gone (client left, deadline): stop the work."""
        self.gone.set()
        self.peer.drop_streams(self.id, CallAborted("cancelled"))
        if self.task is not None:
            self.task.cancel()

    def finish(self) -> None:
        if self.peer.calls.get(self.id) is self:
            del self.peer.calls[self.id]
        self.peer.inbound.pop(self.id, None)

