"""One call over a link, as a plugin's ``edge_calls`` sees it: send a ``req``, get an ``EdgeResponse``.

Shared by the hosts' ``EdgeCalls`` transports (``edge/calls.py`` on an edge,
``bridge/local_calls.py`` on the bridge): the request frame is built once here, a body over 256 KiB (or an iterator) is
streamed with credit and bounded by ``max_body``, the answer's body is inline or streamed,
and every way out — deadline, link lost, ``aclose`` — ends the call exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from ..sdk.calls import EdgeCallError, EdgeResponse
from ..types import Principal, current_principal
from ..wire import protocol as P
from ..wire.call import Call, CallAborted
from ..wire.peer import LinkClosed, OutStream, Peer

log = logging.getLogger("isthmus.runtime.peer_calls")


def caller(principal: Principal | None, path: str) -> Principal:
    """Who a call runs as (the given principal, else the request being served's), checking ``path``."""
    who = principal or current_principal.get()
    if who is None:
        raise EdgeCallError("an edge call needs a principal: call while serving a request, or pass the "
                            "principal the work belongs to", 401)
    if not path.startswith("/") or len(path) < 2:
        raise EdgeCallError(f"path must be /<plugin>/..., not {path!r}", 400)
    return who


def request_frame(method: str, path: str, params: Mapping[str, str] | None, json: Any,
                  content: bytes | AsyncIterator[bytes] | None, headers: Mapping[str, str] | None,
                  principal: Principal, max_body: int,
                  drop: frozenset[bytes] = frozenset()) -> tuple[P.Frame, bytes | AsyncIterator[bytes]]:
    """The ``req`` frame (without id and deadline) and the body to send; 413 when a bytes body is too big."""
    head = [[k.lower().encode("latin-1"), v.encode("latin-1")] for k, v in (headers or {}).items()
            if k.lower().encode("latin-1") not in drop]
    body: bytes | AsyncIterator[bytes] = b""
    if json is not None:
        body = orjson.dumps(json)
        head.append([b"content-type", b"application/json"])
    elif content is not None:
        body = content
    if isinstance(body, bytes) and len(body) > max_body:
        raise EdgeCallError(f"request body of {len(body)} bytes is over the limit of {max_body} bytes", 413)
    frame: P.Frame = {"t": P.REQUEST, "m": method.upper(), "p": path,
                      "q": urlencode(dict(params or {})).encode(), "h": head, "pr": principal.to_wire()}
    return frame, body


async def send(peer: Peer, rid: int, deadline: float, frame: P.Frame, body: bytes | AsyncIterator[bytes],
               max_body: int, edge: str) -> EdgeResponse:
    """Send the call on ``peer`` and wait (``deadline`` seconds) for its answer's status and headers."""
    streamed = not isinstance(body, bytes) or len(body) > P.INLINE_BODY_MAX
    if not streamed:
        frame["b"] = body
    call = Call(peer, rid, deadline)
    pump: asyncio.Task[None] | None = None
    what = f"{frame['m']} {frame['p']}"
    try:
        out = call.send(frame, streamed)
        if out is not None:
            pump = asyncio.create_task(_pump(body, out, max_body, call))
        response = await asyncio.wait_for(asyncio.shield(call.response), deadline)
    except TimeoutError as exc:
        _stop(call, pump)
        raise EdgeCallError(f"edge {edge} did not answer {what} within {deadline:g} s", 504) from exc
    except (CallAborted, LinkClosed) as exc:
        _stop(call, pump)
        raise EdgeCallError(f"edge {edge}: {exc}; the request may not have completed", 503) from exc
    except BaseException:
        _stop(call, pump)
        raise
    status = response.get("st")
    if type(status) is not int or not 100 <= status <= 599:
        _stop(call, pump)
        raise EdgeCallError(f"edge {edge} sent a malformed response (status {status!r})", 502)
    call.answered = True

    async def close() -> None:
        _stop(call, pump)

    headers = [(bytes(k), bytes(v)) for k, v in response.get("h") or []]
    return EdgeResponse(status, headers, _body(call, response, edge), close)


async def read_json(response: EdgeResponse, what: str) -> Any:
    """``EdgeCalls.call``'s answer: the decoded JSON, or ``EdgeCallError`` for a status ≥ 400."""
    async with response:
        await response.raise_for_status(what)
        raw = await response.read()
    return orjson.loads(raw) if raw else None


def _stop(call: Call, pump: asyncio.Task[None] | None) -> None:
    if pump is not None and not pump.done():
        pump.cancel()
    call.finish()


async def _body(call: Call, response: P.Frame, edge: str) -> AsyncIterator[bytes]:
    """The answer's body: inline, or the stream read chunk by chunk (credit as it is read)."""
    try:
        if not response.get("s"):
            yield response.get("b") or b""
            return
        stream = call.body()
        if stream is None:
            raise EdgeCallError(f"edge {edge}'s response stream vanished", 502)
        while True:
            try:
                data = await stream.read()
            except (CallAborted, LinkClosed, ConnectionError) as exc:
                raise EdgeCallError(f"edge {edge} broke off its answer: {exc}", 502) from exc
            if data is None:
                return
            yield data
    finally:
        call.finish()


async def _pump(body: bytes | AsyncIterator[bytes], out: OutStream, max_body: int, call: Call) -> None:
    """Send a streamed request body in full chunks; over ``max_body`` the call fails with 413."""
    try:
        if isinstance(body, bytes):
            await out.write(body, end=True)
            return
        total = 0
        pending = bytearray()
        async for piece in body:
            total += len(piece)
            if total > max_body:
                call.fail(EdgeCallError(f"request body is over the limit of {max_body} bytes", 413))
                return
            pending += piece
            if len(pending) >= P.CHUNK_SIZE:
                data, pending = bytes(pending), bytearray()
                await out.write(data)
        await out.write(bytes(pending), end=True)
    except (CallAborted, LinkClosed, ConnectionError) as exc:
        log.debug("request body stream ended early: %s", exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the caller's iterator failed: fail the call, not the loop
        with contextlib.suppress(Exception):
            call.fail(EdgeCallError(f"reading the request body failed: {exc}", 400))
