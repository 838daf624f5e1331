"""uvicorn's protocols with the limits a public server needs before anyone has authenticated.

uvicorn leaves these to a front proxy; the bridge is often the front, so it sets them:

* request line + headers: at most ``max_header_bytes`` (431 past it) and ``header_timeout``
  seconds from the first byte (408), so slow or huge headers cost nothing lasting;
* a connection that never sends a request is closed after ``header_timeout``; an idle
  keep-alive one after uvicorn's ``timeout_keep_alive``;
* a request body that stops arriving for ``body_timeout`` seconds (while the bridge is
  reading) ends the connection;
* at most ``preauth_per_address`` connections per client address that have not yet
  authenticated (an edge's hello or a request with a valid token marks a connection);
* a WebSocket accepts messages of at most ``PREAUTH_MESSAGE`` bytes until the edge is
  enrolled (``Guard.authenticated`` raises the limit to the configured maximum).

The app reaches the guard through ``guard_of(scope)``: it sits in the ASGI extension
``scope["extensions"]["isthmus.guard"]``, a dict (as ASGI wants extensions) ``{"guard": Guard}``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("isthmus.bridge.server")

PREAUTH_MESSAGE = 256 * 1024  # an edge's hello with every built-in manifest is ~20 KB


@dataclass
class Limits:
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    preauth_per_address: int = 256  # 0 = no cap (e.g. behind a proxy that already limits)


LIMITS = Limits()
_preauth: defaultdict[str, int] = defaultdict(int)  # client address -> unauthenticated connections


def _address(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return "?"


class Guard:
    """One connection's pre-authentication slot; released once, on auth or on close."""

    __slots__ = ("_on_auth", "address", "held")

    def __init__(self, address: str, on_auth: Any = None) -> None:
        self.address = address
        self.held = False
        self._on_auth = on_auth

    def take(self) -> bool:
        cap = LIMITS.preauth_per_address
        if cap and _preauth[self.address] >= cap:
            return False
        _preauth[self.address] += 1
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            left = _preauth[self.address] - 1
            if left > 0:
                _preauth[self.address] = left
            else:
                _preauth.pop(self.address, None)

    def authenticated(self) -> None:
        """The app saw valid credentials on this connection: lift the pre-auth limits."""
        if self.held:
            self.release()
        if self._on_auth is not None:
            on_auth, self._on_auth = self._on_auth, None
            on_auth()


_REFUSED = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"


class _Refuse(Exception):
    def __init__(self, status: int, reason: bytes, detail: str) -> None:
        self.status, self.reason, self.detail = status, reason, detail


class GuardedHttp(HttpToolsProtocol):
    """httptools with header size/time limits, body idle timeout and the per-address cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard: Guard | None = None
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._upgraded = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.guard = Guard(_address(transport))
        if not self.guard.take():
            log.warning("refusing a connection from %s: %d connections without authentication",
                        self.guard.address, LIMITS.preauth_per_address)
            self._refuse(_Refuse(503, b"Service Unavailable", "too many unauthenticated connections "
                                                               "from this address"))
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.guard is not None and not self._upgraded:
            self.guard.release()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(LIMITS.header_timeout, self._header_expired)

    def _header_expired(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            # nothing started, or idle after a response: just close (no request to answer)
            if self.transport is not None and not self.transport.is_closing():
                self._refuse(_Refuse(408, b"Request Timeout", "the request headers did not arrive in time"))

    def _refuse(self, refusal: _Refuse) -> None:
        body = orjson.dumps({"detail": refusal.detail})
        self.transport.write(_REFUSED % (refusal.status, refusal.reason, len(body), body))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
            if self._in_headers:
                # headers still incomplete after this read: httptools buffers them, so count
                # what it holds, and start the clock (most requests never get here: their
                # headers arrive in one read, so the fast path sets no timer at all)
                self._count(len(data))
                self._arm_header_timer()
        except _Refuse as refusal:
            self._refuse(refusal)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, _Refuse):
                self._refuse(cause)
                return
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._in_headers = True
        self.scope["extensions"] = {"isthmus.guard": {"guard": self.guard}}

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > LIMITS.max_header_bytes:
            raise _Refuse(431, b"Request Header Fields Too Large",
                          f"request line and headers over {LIMITS.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self._upgraded and self._body_timer is None:
            self._body_seen = time.monotonic()
            self._body_timer = self.loop.call_later(LIMITS.body_timeout, self._body_check)

    def on_body(self, body: bytes) -> None:
        self._body_seen = time.monotonic()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def _body_check(self) -> None:
        """Close a connection whose body stalled; reading paused by the bridge is not a stall."""
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.disconnected:
            return
        idle = time.monotonic() - self._body_seen
        if self.flow.read_paused or idle < LIMITS.body_timeout:
            wait = LIMITS.body_timeout if self.flow.read_paused else LIMITS.body_timeout - idle
            self._body_timer = self.loop.call_later(wait, self._body_check)
            return
        log.info("closing a connection from %s: no request body for %.0f s",
                 self.guard.address if self.guard else "?", idle)
        self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        self._upgraded = True
        self._cancel_timers()
        if self.guard is not None:
            self.guard.release()  # the WebSocket protocol takes its own slot
        super().handle_websocket_upgrade()


class GuardedWebSocket(WebSocketsSansIOProtocol):
    """Small messages only until the edge is enrolled; counts against the pre-auth cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.max_message_size = min(PREAUTH_MESSAGE, self.config.ws_max_size)
        self.guard: Guard | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.guard = Guard(_address(transport), on_auth=self._lift)
        if not self.guard.take():
            log.warning("refusing a WebSocket from %s: too many unauthenticated connections",
                        self.guard.address)
            transport.close()

    def _lift(self) -> None:
        self.conn.max_message_size = self.config.ws_max_size

    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is not None:
            self.guard.release()
        super().connection_lost(exc)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.setdefault("extensions", {})["isthmus.guard"] = {"guard": self.guard}


def guard_of(scope: dict[str, Any]) -> Guard | None:
    extension = (scope.get("extensions") or {}).get("isthmus.guard") or {}
    guard = extension.get("guard")
    return guard if isinstance(guard, Guard) else None


def tune_malloc() -> None:
    """Let glibc return big freed buffers to the system (fixed mmap threshold, trimming).

    By default glibc raises its mmap threshold after each big free, so the next big
    message lands on the heap and its pages stay with the process after it is freed.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 128 * 1024)
    mallopt(m_trim_threshold, 1024 * 1024)
