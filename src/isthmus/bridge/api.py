"""The bridge's own REST API (FastAPI): edges, menu, login, terminate.

The principal was resolved by the dispatcher in ``app.py`` and sits in
``request.state.principal``; these routes only check roles. There is no ``/api/docs``:
Swagger UI would come from a public CDN (no copy is installed), so only the OpenAPI
document is served, at ``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from ..sdk.plugin import validation_errors
from ..types import Principal, Role
from .auth import COOKIE_NAME, TokenStore, same_origin
from .edges import EdgeRegistry
from .topology import PAGE_DEFAULT, PAGE_MAX


class Bridge(Protocol):
    """What the API needs of the bridge (a Protocol, so api.py does not import app.py)."""

    edges: EdgeRegistry
    tokens: TokenStore
    settings: Any

    def request_exit(self) -> None: ...


def principal_of(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
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


LOGIN_BODY = 'the body must be JSON: {"token": "<token>"}'


def refuse_cross_site(request: Request) -> None:
    """403 for a browser request sent by another site (the same check app.py makes for
    cookie-authenticated writes); used on the routes that need no credentials."""
    if not same_origin(request.scope["headers"]):
        raise HTTPException(403, "cross-site request refused")


def build_api(bridge: Bridge) -> FastAPI:
    api = FastAPI(title="Isthmus bridge", version="0.1.0", docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None, openapi_url="/api/openapi.json")

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)

    @api.get("/edge/list", operation_id="edge_list")
    @api.post("/edge/list", operation_id="edge_list_post")  # one id per method: OpenAPI needs them unique
    async def edge_list(request: Request,
                        limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
                        after: Annotated[str | None, Query(max_length=64)] = None,
                        plugin: Annotated[str | None, Query(max_length=128)] = None,
                        name: Annotated[str | None, Query(max_length=128, description="a glob, e.g. hpc*")] = None,
                        view: Annotated[Literal["full", "summary"], Query()] = "full") -> dict[str, Any]:
        """Connected edges (and ``bridge`` for bridge-hosted plugins) in name order, a page at a time.

        ``next`` is the ``after`` of the next page (null on the last); ``view=summary`` leaves
        out the plugins' menus and UI; ``version`` is the topology's version.
        """
        principal_of(request)
        index = bridge.edges.topology
        index.flush()
        edges, next_after = index.page(limit=limit, after=after, plugin=plugin, name=name, full=view == "full")
        return {"edges": edges, "next": next_after, "count": len(index), "version": index.version}

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
        edges, _ = bridge.edges.topology.page(limit=PAGE_MAX)
        for edge, info in edges.items():
            for plugin, manifest in (info.get("plugins") or {}).items():
                for section in manifest.get("menu") or []:
                    sections.append({**section, "edge": edge, "plugin": plugin})
        sections.sort(key=lambda s: (s.get("order", 100), s.get("edge", ""), s.get("id", "")))
        return {"sections": sections}

    @api.get("/auth/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        return {"name": principal.name, "role": principal.role.name}

    @api.post("/auth/login", openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": Login.model_json_schema()}}}})
    async def login(request: Request, response: Response) -> dict[str, Any]:
        """Exchange a token for an HttpOnly session cookie (the Explorer's login).

        The body is parsed here, not by FastAPI, so no error ever repeats what was sent;
        another site may not log a browser in (login CSRF).
        """
        refuse_cross_site(request)
        try:
            body = Login.model_validate_json(await request.body())
        except ValidationError:
            raise HTTPException(422, LOGIN_BODY) from None
        principal = bridge.tokens.client(body.token)
        if principal is None:
            raise HTTPException(401, "that token is not valid here")
        response.set_cookie(COOKIE_NAME, body.token, httponly=True, samesite="strict",
                            secure=bridge.settings.tls, path="/", max_age=12 * 3600)
        return {"name": principal.name, "role": principal.role.name}

    @api.post("/auth/logout")
    async def logout(request: Request, response: Response) -> dict[str, Any]:
        """Clear the session cookie; only the bridge's own pages (or non-browser clients) may."""
        refuse_cross_site(request)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict",
                               secure=bridge.settings.tls)
        return {"status": "logged out"}

    return api
