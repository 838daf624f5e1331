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

    menu_cache: dict[str, Any] = {}

    @api.get("/menu")
    async def menu(request: Request) -> dict[str, Any]:
        """Menu sections merged across plugins and edges, lower ``order`` first.

        Sections with the same ``id`` are one section; an item is one per (plugin, item id),
        with the first edge (by name) that offers it in ``edge`` and how many do in ``edges``.
        Work is per distinct manifest (the index interns them), not per edge, and the answer
        is kept until the topology's version changes.
        """
        principal_of(request)
        index = bridge.edges.topology
        index.flush()
        local = index.local()
        local_menus = [(pid, m.get("menu")) for pid, m in local.items()]
        if menu_cache.get("version") == index.version and menu_cache.get("local") == local_menus:
            return menu_cache["answer"]  # type: ignore[no-any-return]
        # distinct manifest (by identity) -> [plugin, its manifest, first edge, number of edges]
        distinct: dict[int, list[Any]] = {}

        def count(edge: str, plugins: dict[str, Any]) -> None:
            for pid, manifest in plugins.items():
                if not isinstance(manifest, dict) or not manifest.get("menu"):
                    continue
                entry = distinct.get(id(manifest))
                if entry is None:
                    distinct[id(manifest)] = [pid, manifest, edge, 1]
                else:
                    entry[3] += 1

        count("bridge", local)
        for name in index.names:
            count(name, index.members[name].describe().get("plugins") or {})
        sections: dict[str, dict[str, Any]] = {}
        items: dict[tuple[str, str, str], dict[str, Any]] = {}
        for pid, manifest, edge, edges in distinct.values():
            for section in manifest["menu"]:
                merged = sections.setdefault(section["id"], {
                    **{k: v for k, v in section.items() if k != "items"}, "edge": edge, "plugin": pid,
                    "plugins": [], "items": []})
                if pid not in merged["plugins"]:
                    merged["plugins"].append(pid)
                merged["order"] = min(merged.get("order", 100), section.get("order", 100))
                for item in section.get("items") or []:
                    key = (section["id"], pid, item["id"])
                    known = items.get(key)
                    if known is None:
                        items[key] = known = {**item, "plugin": pid, "edge": edge, "edges": 0}
                        merged["items"].append(known)
                    elif edge < known["edge"]:
                        known["edge"] = edge
                    known["edges"] += edges
        ordered = sorted(sections.values(), key=lambda s: (s.get("order", 100), s.get("id", "")))
        answer = {"sections": ordered}
        menu_cache.update(version=index.version, local=local_menus, answer=answer)
        return answer

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
        request.state.principal = principal  # for the audit line (bridge/exchange.py)
        response.set_cookie(COOKIE_NAME, body.token, httponly=True, samesite="strict",
                            secure=bridge.settings.tls, path="/", max_age=12 * 3600)
        return {"name": principal.name, "role": principal.role.name}

    @api.post("/auth/logout")
    async def logout(request: Request, response: Response) -> dict[str, Any]:
        """Clear the session cookie (and an OIDC login's refresh cookie); only the bridge's own
        pages (or non-browser clients) may."""
        from .oidc import PREFIX, REFRESH_COOKIE  # the OIDC login's refresh cookie

        refuse_cross_site(request)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict",
                               secure=bridge.settings.tls)
        response.delete_cookie(REFRESH_COOKIE, path=PREFIX, httponly=True, samesite="strict",
                               secure=bridge.settings.tls)
        return {"status": "logged out"}

    oidc = getattr(bridge, "oidc", None)
    if oidc is not None:  # /auth/oidc/... (bridge/oidc.py)
        api.include_router(oidc.router())
    else:
        @api.get("/auth/oidc/config")
        async def oidc_off() -> dict[str, Any]:
            """Single sign-on is not configured (public: the login page asks before showing a button)."""
            return {"enabled": False}

    return api
