"""Request bodies read with a size cap and a clock, for routes that are not the proxy's hot path.

The proxy (``proxy.py``) streams bodies to edges (and to bridge-hosted plugins) with its
own limits; the unauthenticated routes use these helpers so that they read a few KB at
most, within a few seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

CLOSE = [(b"connection", b"close")]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def declared_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


async def read_body(scope: dict[str, Any], receive: Any, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes before reading them when declared."""
    length = declared_length(scope)
    if length is not None and (length < 0 or length > limit):
        raise BodyTooLarge
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` that hands out ``body`` once, then waits for nothing (disconnect)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
