"""HTTP for the Python client: transport errors mapped into the exception tree, in one place.

``map_exceptions`` is httpx-to-Isthmus translation (always ``raise ... from``); ``HTTPClient``
applies it to every request and streamed body; ``raise_for`` turns non-2xx answers into
``ClientError`` with the server's ``detail``.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx

from ..errors import BridgeTimeout, BridgeUnreachable, ClientError, TransportError


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind an httpx error, if the TLS handshake is what failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def map_exceptions(url: object = "") -> Iterator[None]:
    """The one place httpx's transport errors become Isthmus's (``raise ... from`` httpx's):
    timeouts → ``BridgeTimeout``, connection failures (refused, unknown host, TLS) →
    ``BridgeUnreachable``, any other broken connection → ``TransportError``."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise BridgeTimeout(f"{url} did not answer in time ({type(exc).__name__}: {str(exc) or 'timed out'})",
                            url=str(url)) from exc
    except httpx.ConnectError as exc:
        tls = _tls_failure(exc)
        what = f"TLS handshake with {url} failed: {tls}" if tls else f"cannot connect to {url}: {exc}"
        raise BridgeUnreachable(what, url=str(url)) from exc
    except httpx.TransportError as exc:
        raise TransportError(f"the connection to {url} failed ({type(exc).__name__}: {exc})",
                             url=str(url)) from exc


class _MappedStream(httpx.SyncByteStream):
    """A streamed answer's body, read under ``map_exceptions``."""

    def __init__(self, stream: httpx.SyncByteStream, url: str) -> None:
        self._stream = stream
        self._url = url

    def __iter__(self) -> Iterator[bytes]:
        with map_exceptions(self._url):
            yield from self._stream

    def close(self) -> None:
        with map_exceptions(self._url):
            self._stream.close()


class HTTPClient(httpx.Client):
    """An ``httpx.Client`` that raises the Isthmus tree: every request (and a streamed answer's
    body) goes through ``map_exceptions``, so plugin clients using ``self._http`` get it too."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        # named in errors without userinfo or query string: either may carry secrets
        url = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}{request.url.path}"
        for attempt in range(RATE_RETRIES + 1):
            with map_exceptions(url):
                response = super().send(request, **kwargs)
            wait = _retry_after(response) if attempt < RATE_RETRIES else None
            if wait is None or not isinstance(request.stream, httpx.ByteStream):  # a stream cannot be sent twice
                break
            response.close()
            time.sleep(wait)
        if kwargs.get("stream") and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _MappedStream(response.stream, url)
        return response


RATE_RETRIES = 5  # a 429 (the bridge's per-principal rate limit) is retried this often
RATE_WAIT_MAX = 30.0  # but only when Retry-After asks for no more than this many seconds


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending again after a 429, or None (do not retry)."""
    if response.status_code != 429:
        return None
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return wait if 0 <= wait <= RATE_WAIT_MAX else None


def _describe(detail: object) -> str:
    """A structured detail (a SchedulerError's, a batch's problems) reads as its message
    followed by the rest, so nothing the server said is lost from the error's text."""
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        rest = {k: v for k, v in detail.items() if k != "message" and v not in (None, "", [], {})}
        return f"{detail['message']}: {json.dumps(rest, default=str)}" if rest else str(detail["message"])
    return str(detail)


def raise_for(resp: httpx.Response, context: str = "") -> None:
    """Raise ClientError with the server's detail for a non-2xx answer."""
    if resp.is_success:
        return
    try:
        body = resp.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = resp.text[:500]
    what = f"{context}: " if context else ""
    raise ClientError(f"{what}HTTP {resp.status_code}: {_describe(detail)}", status_code=resp.status_code,
                      detail=detail)
