"""Serve one ``req`` frame by calling an ASGI app in process (no loopback HTTP).

Used by the edge for its plugins and by the bridge for the plugins it hosts itself.
Small bodies travel inline; larger request and response bodies stream through the
link's flow-controlled chunk frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..types import Principal, current_principal
from ..wire import protocol as P
from ..wire.link import InStream, Link

log = logging.getLogger("isthmus.asgi")

Reply = Callable[[dict[str, Any]], None]


def _error_frame(rid: int, status: int, detail: str) -> dict[str, Any]:
    import orjson

    return {"t": P.RESPONSE, "id": rid, "st": status,
            "h": [[b"content-type", b"application/json"]],
            "b": orjson.dumps({"detail": detail})}


def prepare(link: Link, frame: dict[str, Any]) -> InStream | None:
    """Open the request's inbound stream at once, before any of its chunks is dispatched."""
    return link.open_inbound(frame["id"]) if frame.get("s") else None


async def serve_request(app: Any, frame: dict[str, Any], link: Link, instream: InStream | None,
                        gone: asyncio.Event | None = None) -> None:
    """Run ``app`` for ``frame`` and send the ``res`` (and chunk) frames over ``link``."""
    rid: int = frame["id"]
    principal = Principal.from_wire(frame.get("pr"))
    token = current_principal.set(principal)
    path: str = frame["p"]
    body_sent = False
    gone = gone or asyncio.Event()
    started: dict[str, Any] = {}
    pending = bytearray()
    outstream = None
    finished = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if instream is not None and not instream.done:
            data = await instream.read()
            return {"type": "http.request", "body": data or b"", "more_body": data is not None}
        if not body_sent and instream is None:
            body_sent = True
            return {"type": "http.request", "body": frame.get("b") or b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal outstream, finished
        kind = message["type"]
        if kind == "http.response.start":
            started["st"] = message["status"]
            started["h"] = [[k, v] for k, v in message.get("headers", [])]
            return
        if kind != "http.response.body" or finished:
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if outstream is None:
            if len(pending) + len(body) <= P.INLINE_BODY_MAX:
                if not more:
                    link.send({"t": P.RESPONSE, "id": rid, "st": started["st"], "h": started["h"],
                               "b": bytes(pending) + body if pending else body})
                    finished = True
                    return
                pending.extend(body)
                return
            link.send({"t": P.RESPONSE, "id": rid, "st": started["st"], "h": started["h"], "s": True})
            outstream = link.open_outbound(rid)
            if pending:
                await outstream.write(bytes(pending))
                pending.clear()
        await outstream.write(body, end=not more)
        if not more:
            finished = True

    query: bytes = frame.get("q") or b""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": frame["m"],
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k, v) for k, v in frame.get("h") or ()],
        "client": ("bridge", 0),
        "server": ("edge", 0),
        "state": {"principal": principal},
    }
    try:
        await app(scope, receive, send)
        if not finished:
            if "st" in started and outstream is None:
                link.send({"t": P.RESPONSE, "id": rid, "st": started["st"], "h": started["h"],
                           "b": bytes(pending)})
            elif outstream is not None:
                await outstream.write(b"", end=True)
            else:
                link.send(_error_frame(rid, 500, "the plugin sent no response"))
    except asyncio.CancelledError:
        link.drop_streams(rid, ConnectionAbortedError("cancelled"))
        raise
    except Exception as exc:
        log.exception("request %s %s failed", frame["m"], path)
        if "st" not in started:
            link.send(_error_frame(rid, 500, f"{type(exc).__name__}: {exc}"))
        else:
            link.drop_streams(rid, exc)
            link.send({"t": P.CANCEL, "id": rid})
    finally:
        current_principal.reset(token)
        link.inbound.pop(rid, None)
