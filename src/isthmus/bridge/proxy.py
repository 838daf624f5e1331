"""The hot path: ``/{edge}/{plugin}/...`` forwarded to an edge as frames (raw ASGI).

No routing framework here: measured, FastAPI routes on this path halve throughput.
Small bodies ride inside the ``req``/``res`` frames; larger ones stream both ways
with flow control, so memory stays bounded whatever the size.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

import orjson

from ..sdk.ui import endpoint_problem
from ..types import Principal
from ..wire import protocol as P
from ..wire.link import Link, LinkClosed
from .edges import EdgeGone, EdgeLink

log = logging.getLogger("isthmus.bridge.proxy")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
                        b"proxy-authorization", b"authorization", b"cookie", b"host",
                        b"x-isthmus-deadline"})

# -- what an edge's answer may say to a browser --------------------------------------------------
#
# An edge is another machine, possibly hostile, yet its answers come from the bridge's origin,
# where the Explorer's session cookie lives. So a proxied answer is never a page of this site:
# it may not set or clear the bridge's cookies and storage, set the origin's policies, redirect
# or preload elsewhere, or run script. The work is per response header, never per body byte.

RESPONSE_DROP = frozenset({
    # hop-by-hop: the bridge's server frames the answer itself
    b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection", b"te",
    b"trailer",
    # the origin's state: only the bridge sets its cookies or wipes them
    b"set-cookie", b"set-cookie2", b"clear-site-data",
    # the origin's policies: the bridge's own (RESPONSE_ADD) replace the edge's
    b"content-security-policy", b"content-security-policy-report-only", b"x-content-security-policy",
    b"x-webkit-csp", b"x-frame-options", b"x-content-type-options", b"x-xss-protection",
    b"strict-transport-security", b"public-key-pins", b"public-key-pins-report-only", b"expect-ct",
    b"permissions-policy", b"feature-policy", b"document-policy", b"origin-agent-cluster",
    b"cross-origin-opener-policy", b"cross-origin-opener-policy-report-only",
    b"cross-origin-embedder-policy", b"cross-origin-embedder-policy-report-only",
    b"cross-origin-resource-policy", b"service-worker-allowed", b"timing-allow-origin",
    b"x-permitted-cross-domain-policies", b"x-dns-prefetch-control", b"x-download-options",
    b"accept-ch", b"critical-ch", b"report-to", b"reporting-endpoints", b"nel",
    # navigation, preloading, credential prompts on the bridge's origin
    b"refresh", b"link", b"content-location", b"sourcemap", b"x-sourcemap", b"alt-svc",
    b"www-authenticate", b"proxy-authenticate",
    # decided below: location (kept only inside the edge), content-type, content-disposition
    b"location", b"content-type", b"content-disposition",
})
# + every access-control-* header: no CORS grants on the bridge's origin from an edge
CORS_PREFIX = b"access-control-"
# Types a browser shows as inert data: served inline. Any other type (HTML, XML, SVG, PDF,
# unknown, missing, several) is served as an attachment, so navigating to it downloads it.
INLINE_TYPES = frozenset({
    b"application/json", b"application/x-ndjson", b"application/octet-stream", b"application/msgpack",
    b"application/x-msgpack", b"text/plain", b"text/csv", b"text/tab-separated-values",
    b"text/event-stream", b"image/png", b"image/jpeg", b"image/gif", b"image/webp", b"image/avif",
    b"image/bmp",
})
# Types a page of this origin could run or apply as a subresource (script, module, worker,
# stylesheet, wasm) whatever the disposition: their Content-Type becomes octet-stream, which
# nosniff forbids to execute.
SUBRESOURCE_TYPES = frozenset({
    b"text/javascript", b"application/javascript", b"application/ecmascript", b"application/x-ecmascript",
    b"application/x-javascript", b"text/ecmascript", b"text/javascript1.0", b"text/javascript1.1",
    b"text/javascript1.2", b"text/javascript1.3", b"text/javascript1.4", b"text/javascript1.5",
    b"text/jscript", b"text/livescript", b"text/x-ecmascript", b"text/x-javascript", b"text/css",
    b"application/wasm",
})
OCTET_STREAM = b"application/octet-stream"
ATTACHMENT = b"attachment"
# No script, no plugins, no forms, no framing: a sandboxed, opaque-origin document at most.
PROXIED_CSP = b"sandbox; default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
RESPONSE_ADD = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", PROXIED_CSP),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
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
        await _relay(link, rid, response, send, edge.name)
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


def relay_headers(raw: Any, edge: str) -> list[tuple[bytes, bytes]]:
    """The headers a client gets for an edge's answer (the policy above); ValueError if malformed.

    Header names compare case-insensitively: a hostile edge may spell ``Set-Cookie`` as it likes.
    """
    out: list[tuple[bytes, bytes]] = []
    ctype: bytes | None = None
    ctypes = 0
    disposition: bytes | None = None
    location: bytes | None = None
    for key, value in raw or ():
        if type(key) is not bytes or type(value) is not bytes:
            raise ValueError("header names and values must be bytes")
        name = key.lower()
        if name in RESPONSE_DROP:
            if name == b"content-type":
                ctype = value
                ctypes += 1
            elif name == b"content-disposition":
                disposition = value
            elif name == b"location":
                location = value
        elif not name.startswith(CORS_PREFIX):
            out.append((key, value))
    if ctype is None or ctypes != 1:
        ctype = OCTET_STREAM  # none, or several to pick from: nothing a browser should guess about
        essence = b""
    else:
        essence = ctype.split(b";", 1)[0].strip().lower()
    if essence in INLINE_TYPES or (essence.startswith(b"application/") and essence.endswith(b"+json")):
        out.append((b"content-type", ctype))
        if disposition is not None:
            out.append((b"content-disposition", disposition))
    else:
        out.append((b"content-type", OCTET_STREAM if essence in SUBRESOURCE_TYPES else ctype))
        if disposition is None or disposition.lstrip()[:10].lower() != ATTACHMENT:
            disposition = ATTACHMENT
        out.append((b"content-disposition", disposition))
    if location is not None:
        target = _edge_location(location, edge)
        if target is not None:
            out.append((b"location", target))
    out.extend(RESPONSE_ADD)
    return out


def _edge_location(location: bytes, edge: str) -> bytes | None:
    """A redirect stays on its edge: ``/plugin/x`` becomes ``/{edge}/plugin/x``; anything else
    (another origin, ``//host``, a ``..`` in any spelling, a backslash) is dropped.

    An edge sees paths without the ``/{edge}`` prefix, so its redirects need it added anyway;
    a 307 to another edge would otherwise re-send the request, cookie and all, over there.
    """
    try:
        text = location.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not edge or not text.startswith("/") or endpoint_problem(text[1:]) is not None:
        return None
    return ("/" + quote(edge, safe="") + text).encode("ascii")


async def _relay(link: Link, rid: int, response: dict[str, Any], send: Any, edge: str = "") -> None:
    status = response.get("st")
    try:
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"status {status!r}")
        headers = relay_headers(response.get("h"), edge)
    except (ValueError, TypeError) as exc:  # the stream, if any, is cancelled by forward()
        log.warning("edge %s sent a malformed response head: %s", edge, exc)
        await respond(send, 502, f"edge {edge} sent a malformed response")
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
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
