"""Request bodies read with a size cap and a clock, for routes that are not the proxy's hot path.

The proxy (``proxy.py``) streams bodies to edges with its own limits; the unauthenticated
routes and the bridge-hosted plugins use these helpers so that no route reads an
unbounded body or runs past the request deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .proxy import MAX_DEADLINE, relay_headers, respond

log = logging.getLogger("isthmus.bridge")

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


def request_deadline(scope: dict[str, Any], default: float) -> float:
    """The client's ``X-Isthmus-Deadline`` (capped), else ``default``."""
    for key, value in scope["headers"]:
        if key == b"x-isthmus-deadline":
            try:
                asked = float(value)
            except ValueError:
                return default
            return min(asked, MAX_DEADLINE) if asked > 0 else default
    return default


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


async def serve_limited(app: Any, scope: dict[str, Any], receive: Any, send: Any, *,
                        max_body: int, deadline: float) -> None:
    """Run an ASGI app under a body cap (413) and a deadline (504, its task cancelled).

    Its answers get the proxied-response header policy too (``proxy.relay_headers``): a
    bridge-hosted plugin may serve content that users supplied.
    """
    length = declared_length(scope)
    if length is not None and (length < 0 or length > max_body):
        await respond(send, 413, f"request body of {length} bytes is over the limit of {max_body} bytes", CLOSE)
        return
    state = {"read": 0, "over": False, "started": False}

    async def limited_receive() -> dict[str, Any]:
        if state["over"]:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            state["read"] += len(message.get("body", b""))
            if state["read"] > max_body:
                state["over"] = True
                return {"type": "http.disconnect"}
        return message  # type: ignore[no-any-return]

    async def tracked_send(message: dict[str, Any]) -> None:
        if state["over"] and not state["started"]:
            return  # the app's answer to a cut-off body is replaced by our 413
        if message["type"] == "http.response.start":
            state["started"] = True
            message = {**message, "headers": relay_headers(message.get("headers"), "bridge")}
        await send(message)

    try:
        await asyncio.wait_for(app(scope, limited_receive, tracked_send), deadline)
    except TimeoutError:
        if not state["started"]:
            await respond(send, 504, f"the plugin did not answer within {deadline:g} s")
        else:
            log.warning("bridge plugin %s passed its deadline mid-response", scope.get("path"))
        return
    except Exception:
        if not state["over"]:
            raise
    if state["over"] and not state["started"]:
        await respond(send, 413, f"request body is over the limit of {max_body} bytes", CLOSE)
