"""The hot path: ``/{edge}/{plugin}/...`` forwarded to an edge as frames (raw ASGI).

No routing framework here: measured, FastAPI routes on this path halve throughput.
Small bodies ride inside the ``req``/``res`` frames; larger ones stream both ways
with flow control, so memory stays bounded whatever the size.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from ..types import Principal
from ..wire import protocol as P
from ..wire.call import Call, CallAborted
from ..wire.peer import LinkClosed
from .edges import EdgeLink
from .headers import relay_headers

log = logging.getLogger("isthmus.bridge.proxy")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
                        b"proxy-authorization", b"authorization", b"cookie", b"host",
                        b"x-isthmus-deadline", b"x-request-id"})

FAST_WAIT = 0.05
MAX_DEADLINE = 3600.0


async def respond(send: Any, status: int, detail: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def request_headers(scope: dict[str, Any], drop: frozenset[bytes] = HOP_BY_HOP,
                    ) -> tuple[list[list[bytes]], int | None, bool, float | None]:
    """(the headers to pass on, content-length (-1: malformed), chunked, the asked deadline);
    shared by the proxy and the bridge-to-bridge relay, each with its own ``drop`` set."""
    forwarded: list[list[bytes]] = []
    length: int | None = None
    chunked = False
    deadline: float | None = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"x-isthmus-deadline":
            try:
                deadline = min(float(value), MAX_DEADLINE)
            except ValueError:
                deadline = None
        if key not in drop:
            forwarded.append([key, value])
    return forwarded, length, chunked, deadline


async def forward(edge: EdgeLink, path: str, scope: dict[str, Any], receive: Any, send: Any,
                  principal: Principal, *, rid: int, max_body: int, deadline: float,
                  request_id: str | None = None) -> None:
    """Forward one request to ``edge`` as a call and relay its answer; ``request_id`` (the
    bridge's id for the request) rides in the frame so the edge's logs and plugins see it."""
    headers, length, chunked, asked_deadline = request_headers(scope)
    if asked_deadline is not None and asked_deadline > 0:
        deadline = asked_deadline
    if length is not None and (length < 0 or length > max_body):
        await respond(send, 413, f"request body of {length} bytes is over the limit of {max_body} bytes")
        return
    streamed = chunked or (length is not None and length > P.INLINE_BODY_MAX)
    frame: P.Frame = {"t": P.REQUEST, "m": scope["method"], "p": path, "q": scope.get("query_string", b""),
                      "h": headers, "pr": principal.to_wire()}
    if request_id is not None:
        frame["x"] = request_id
    if not streamed:
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        frame["b"] = body
    call = edge.call(rid, deadline)
    waiter = _Waiter(asyncio.get_running_loop(), call.response, receive, deadline)
    relaying = False
    try:
        out = call.send(frame, streamed)
        if out is not None:
            waiter.pump(_pump_body(receive, out, max_body))
        else:
            waiter.arm()
        try:
            response = await call.response
        except _ClientGone:
            return
        except _TooLarge:
            await respond(send, 413, f"request body is over the limit of {max_body} bytes")
            return
        except _DeadlinePassed:
            await respond(send, 504, f"the edge did not answer within {deadline:g} s")
            return
        waiter.done()
        relaying = call.answered = True
        await _relay(call, response, send, edge.name)
    except (CallAborted, LinkClosed) as exc:
        if not relaying:
            await respond(send, 503, f"{exc}; the request may not have completed")
        else:  # headers are out: the client sees a truncated body, never a silent short file
            log.warning("edge %s went away while streaming a response: %s", edge.name, exc)
    finally:
        waiter.done()
        call.finish()


class _ClientGone(Exception):
    pass


class _TooLarge(Exception):
    pass


class _DeadlinePassed(Exception):
    pass


class _Waiter:
    """Turns client departure, body overflow and the deadline into exceptions on ``fut``.

    The common case costs one timer: only a request still unanswered after FAST_WAIT
    gets a task watching for the client going away. The deadline counts from the end of
    the request body, so long uploads are not cut short.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], receive: Any,
                 deadline: float) -> None:
        self.loop = loop
        self.fut = fut
        self.receive = receive
        self.deadline = deadline
        self.handles: list[asyncio.TimerHandle] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def _fail(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)

    def arm(self, watch_now: bool = False) -> None:
        """Start the clock: after FAST_WAIT (or now) watch the client and the deadline."""
        if watch_now:
            self._watch(0.0)
        else:
            self.handles.append(self.loop.call_later(FAST_WAIT, self._watch, FAST_WAIT))

    def _watch(self, elapsed: float) -> None:
        if self.fut.done():
            return
        self.handles.append(self.loop.call_later(max(0.0, self.deadline - elapsed), self._fail,
                                                 _DeadlinePassed()))
        task = self.loop.create_task(_wait_disconnect(self.receive))

        def gone(t: asyncio.Task[None]) -> None:
            if not t.cancelled():
                self._fail(_ClientGone())

        task.add_done_callback(gone)
        self.tasks.append(task)

    def pump(self, coro: Any) -> None:
        task = self.loop.create_task(coro)

        def pumped(t: asyncio.Task[str | None]) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            why = "error" if exc is not None else t.result()
            if why == "too-large":
                self._fail(_TooLarge())
            elif why in ("disconnect", "error"):
                self._fail(_ClientGone())
            else:
                self.arm(watch_now=True)

        task.add_done_callback(pumped)
        self.tasks.append(task)

    def done(self) -> None:
        for handle in self.handles:
            handle.cancel()
        for task in self.tasks:
            task.cancel()
        self.handles.clear()
        self.tasks.clear()


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _pump_body(receive: Any, out: Any, max_body: int) -> str | None:
    """Copy the client's body into chunk frames (gathered to full chunks); returns why it stopped early."""
    total = 0
    pending = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return "disconnect"
        body = message.get("body", b"")
        total += len(body)
        if total > max_body:
            return "too-large"
        more = message.get("more_body", False)
        pending += body
        if len(pending) >= P.CHUNK_SIZE or not more:
            data, pending = bytes(pending), bytearray()
            await out.write(data, end=not more)
        if not more:
            return None


async def _relay(call: Call, response: P.Frame, send: Any, edge: str) -> None:
    status = response.get("st")
    try:
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"status {status!r}")
        headers = relay_headers(response.get("h"), edge)
    except (ValueError, TypeError) as exc:  # the stream, if any, is cancelled by call.finish()
        log.warning("edge %s sent a malformed response head: %s", edge, exc)
        call.answered = False
        await respond(send, 502, f"edge {edge} sent a malformed response")
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if not response.get("s"):
        await send({"type": "http.response.body", "body": response.get("b") or b""})
        return
    stream = call.body()
    if stream is None:
        raise CallAborted("the edge's response stream vanished")
    while True:
        data = await stream.read()
        if data is None:
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": data, "more_body": True})
