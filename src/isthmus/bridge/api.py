"""The bridge's own REST API (FastAPI): edges, menu, login, terminate.

The principal was resolved by the dispatcher in ``app.py`` and sits in
``request.state.principal``; these routes only check roles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

from ..types import Principal, Role
from .auth import COOKIE_NAME

if TYPE_CHECKING:
    from .app import Bridge


def principal_of(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(401, "authentication required: send 'Authorization: Bearer <token>'")
    return principal


def require(request: Request, role: Role) -> Principal:
    principal = principal_of(request)
    if not principal.can(role):
        raise HTTPException(403, f"this needs the {role.name} role; you are {principal.role.name}")
    return principal


class Login(BaseModel):
    token: str


def build_api(bridge: Bridge) -> FastAPI:
    api = FastAPI(title="Isthmus bridge", version="0.1.0", docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)

    @api.api_route("/edge/list", methods=["GET", "POST"])
    async def edge_list(request: Request) -> dict[str, Any]:
        """Every connected edge (and ``bridge`` for bridge-hosted plugins) with its plugins."""
        principal_of(request)
        return {"edges": bridge.edges.topology()}

    @api.post("/edge/disconnect/{edge}")
    async def edge_disconnect(edge: str, request: Request) -> dict[str, Any]:
        """Ask an edge to stop and drop its connection (admin)."""
        require(request, Role.admin)
        if not await bridge.edges.disconnect(edge):
            raise HTTPException(404, f"no edge named {edge!r} is connected")
        return {"edge": edge, "status": "disconnected"}

    @api.post("/bridge/terminate")
    async def terminate(request: Request) -> dict[str, Any]:
        """Stop the bridge process (admin)."""
        require(request, Role.admin)
        bridge.request_exit()
        return {"status": "terminating"}

    @api.get("/menu")
    async def menu(request: Request) -> dict[str, Any]:
        """All edges' menu sections merged, lower ``order`` first."""
        principal_of(request)
        sections = []
        for edge, info in bridge.edges.topology().items():
            for plugin, manifest in (info.get("plugins") or {}).items():
                for section in manifest.get("menu") or []:
                    sections.append({**section, "edge": edge, "plugin": plugin})
        sections.sort(key=lambda s: (s.get("order", 100), s.get("edge", ""), s.get("id", "")))
        return {"sections": sections}

    @api.get("/auth/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        return {"name": principal.name, "role": principal.role.name}

    @api.post("/auth/login")
    async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
        """Exchange a token for an HttpOnly session cookie (the Explorer's login)."""
        principal = bridge.tokens.client(body.token)
        if principal is None:
            raise HTTPException(401, "that token is not valid here")
        response.set_cookie(COOKIE_NAME, body.token, httponly=True, samesite="strict",
                            secure=bridge.settings.tls, path="/", max_age=12 * 3600)
        return {"name": principal.name, "role": principal.role.name}

    @api.post("/auth/logout")
    async def logout(response: Response) -> dict[str, Any]:
        response.delete_cookie(COOKIE_NAME, path="/")
        return {"status": "logged out"}

    return api
