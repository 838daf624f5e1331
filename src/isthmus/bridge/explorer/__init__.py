"""The Explorer: a single-page app served from package data (no build step, no CDN).

Redirects are relative: StaticFiles builds absolute ones from the request's ``Host``
header, which would send a browser to whatever host a request named.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Message

from ...sdk.registry import entry_points
from ..proxy import respond

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


PLUGIN_MODULE = re.compile(r"^/static/plugins/([A-Za-z0-9_.-]+)\.js$")


def plugin_module_file(name: str) -> Path | None:
    """The ``ui.js`` beside an INSTALLED plugin's module, found without importing the plugin.

    Only names of the ``isthmus.plugins`` entry points are looked up, so nothing an edge
    announces at runtime can make the bridge serve a file.
    """
    ep = entry_points().get(name)
    if ep is None:
        return None
    try:
        spec = importlib.util.find_spec(ep.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    candidate = Path(spec.origin).parent / "ui.js"
    return candidate if candidate.is_file() else None


async def _serve_module(path: Path, send: Any) -> None:
    body = await asyncio.to_thread(path.read_bytes)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/javascript; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def relative_slash_redirect(path: str) -> bytes:
    """``path`` + ``/`` as a Location with no scheme or host, and never ``//`` or ``/\\``
    (which browsers read as another host): only the bridge's own pages are redirected to."""
    clean = "/" + path.replace("\\", "/").lstrip("/")
    return quote(clean.rstrip("/") + "/", safe="/").encode("ascii")


def build_explorer() -> Any:
    files = StaticFiles(directory=STATIC, html=True)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if ".." in scope["path"] or "\x00" in scope["path"]:
            await respond(send, 404, "not found")
            return
        m = PLUGIN_MODULE.match(scope["path"])
        if m is not None:
            module = plugin_module_file(m.group(1))
            if module is None:
                await respond(send, 404, f"no installed plugin module {m.group(1)!r}")
            else:
                await _serve_module(module, send)
            return
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if 300 <= message["status"] < 400:  # StaticFiles' "add a slash" redirect
                    headers = [(k, v) for k, v in headers if k.lower() != b"location"]
                    headers.append((b"location", relative_slash_redirect(scope["path"])))
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        inner = dict(scope)
        path = scope["path"]
        inner["path"] = "/" if path in ("/", "") else path.removeprefix("/static")
        try:
            await files(inner, receive, send_with_headers)
        except HTTPException as exc:  # StaticFiles raises for missing files outside a Starlette app
            await respond(send, exc.status_code, "not found" if exc.status_code == 404 else str(exc.detail))

    return app
