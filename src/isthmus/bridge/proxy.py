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

from .. import protocol as P
from ..link import Link, LinkClosed
from ..types import Principal
from .edges import EdgeGone, EdgeLink

log = logging.getLogger("isthmus.bridge.proxy")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
                        b"proxy-authorization", b"authorization", b"cookie", b"host",
                        b"x-isthmus-deadline"})
RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
FAST_WAIT = 0.05
MAX_DEADLINE = 3600.0


async def respond(send: Any, status: int, detail: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _request_headers(scope: dict[str, Any]) -> tuple[list[list[bytes]], int | None, bool, float | None]:
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
        if key not in HOP_BY_HOP:
            forwarded.append([key, value])
    return forwarded, length, chunked, deadline


async def forward(edge: EdgeLink, path: str, scope: dict[str, Any], receive: Any, send: Any,
                  principal: Principal, *, rid: int, max_body: int, deadline: float) -> None:
    """Forward one request to ``edge`` and relay its answer."""
    link: Link = edge.link
    headers, length, chunked, asked_deadline = _request_headers(scope)
    if asked_deadline is not None and asked_deadline > 0:
        deadline = asked_deadline
    if length is not None and (length < 0 or length > max_body):
        await respond(send, 413, f"request body of {length} bytes is over the limit of {max_body} bytes")
        return
    streamed = chunked or (length is not None and length > P.INLINE_BODY_MAX)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[dict[str, Any]] = loop.create_future()
    edge.pending[rid] = fut
    edge.requests += 1
    frame: dict[str, Any] = {"t": P.REQUEST, "id": rid, "m": scope["method"], "p": path,
                             "q": scope.get("query_string", b""), "h": headers,
                             "pr": principal.to_wire(), "dl": deadline}
    waiter = _Waiter(loop, fut, receive, deadline)
    relaying = answered = False
    try:
        if streamed:
            frame["s"] = True
            out = link.open_outbound(rid)
            link.send(frame)
            waiter.pump(_pump_body(receive, out, max_body))
        else:
            body = b""
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
            frame["b"] = body
            link.send(frame)
            waiter.arm()
        try:
            response = await fut
        except _ClientGone:
            return
        except _TooLarge:
            await respond(send, 413, f"request body is over the limit of {max_body} bytes")
            return
        except _DeadlinePassed:
            await respond(send, 504, f"the edge did not answer within {deadline:g} s")
            return
        waiter.done()
        relaying = answered = True
        await _relay(link, rid, response, send)
    except (EdgeGone, LinkClosed) as exc:
        if not relaying:
            await respond(send, 503, f"{exc}; the request may not have completed")
        else:  # headers are out: the client sees a truncated body, never a silent short file
            log.warning("edge %s went away while streaming a response: %s", edge.name, exc)
    finally:
        waiter.done()
        edge.pending.pop(rid, None)
        if not answered or link.outbound.get(rid) is not None or link.inbound.get(rid) is not None:
            link.send({"t": P.CANCEL, "id": rid})
        link.drop_streams(rid, ConnectionAbortedError("request finished"))


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
        task.add_done_callback(lambda t: t.cancelled() or self._fail(_ClientGone()))
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


async def _relay(link: Link, rid: int, response: dict[str, Any], send: Any) -> None:
    headers = [(k, v) for k, v in response.get("h") or () if k not in RESPONSE_DROP]
    await send({"type": "http.response.start", "status": response["st"], "headers": headers})
    if not response.get("s"):
        await send({"type": "http.response.body", "body": response.get("b") or b""})
        return
    stream = link.inbound.get(rid)
    if stream is None:
        raise EdgeGone("the edge's response stream vanished")
    while True:
        data = await stream.read()
        if data is None:
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": data, "more_body": True})
