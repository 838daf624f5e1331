"""The Explorer: a single-page app served from package data (no build step, no CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from ..app import Bridge

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


def build_explorer(bridge: Bridge) -> Any:
    files = StaticFiles(directory=STATIC, html=True)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        inner = dict(scope)
        path = scope["path"]
        inner["path"] = "/" if path in ("/", "") else path.removeprefix("/static")
        await files(inner, receive, send_with_headers)

    return app
