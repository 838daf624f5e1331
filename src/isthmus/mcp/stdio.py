"""``isthmus mcp``: the same tools over stdio, for desktop assistants that start a local process.

The tools call the bridge over HTTP(S) with the user's token; the bridge's event stream
(``/events``, topology events) drives ``tools/list_changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio
import httpx
import orjson

from .backend import Backend
from .server import IsthmusMCP

log = logging.getLogger("isthmus.mcp")


async def follow_topology(server: IsthmusMCP, url: str, token: str) -> None:
    """Announce a changed tool list on every topology event; reconnect with back-off."""
    delay = 1.0
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    while True:
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as client, \
                    client.stream("GET", f"{url}/events", headers=headers) as resp:
                if resp.status_code != 200:
                    log.warning("the bridge's event stream answered %s; no tools/list_changed", resp.status_code)
                    return
                delay = 1.0
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    with contextlib.suppress(orjson.JSONDecodeError):
                        if orjson.loads(line[5:]).get("topic") in ("topology", "gap"):
                            server.topology_changed()
        except httpx.HTTPError as exc:
            log.info("event stream interrupted (%s); reconnecting in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def serve(url: str, token: str) -> None:
    url = url.rstrip("/")
    server = IsthmusMCP(Backend(url), token=token)
    watcher = asyncio.create_task(follow_topology(server, url, token))
    try:
        await server.run_stdio_async()
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        await server.backend.aclose()


def run(url: str, token: str) -> None:
    anyio.run(serve, url, token)
