"""The host's own routes under ``/_edge`` (reached through the bridge as ``/{edge}/_edge/...``).

Names beginning with ``_`` are reserved for these, so no plugin can shadow them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol

from fastapi import APIRouter, Body, FastAPI, HTTPException, Request, Response

from ..config import AppConfig, check_plugin_document, write_plugin_file
from ..errors import ConfigError
from ..types import Role, current_principal
from .metrics import EdgeMetrics


class Host(Protocol):
    """What these routes need of ``runtime.host.PluginHost`` (so this module does not import it)."""

    @property
    def name(self) -> str: ...
    @property
    def app(self) -> FastAPI: ...
    @property
    def app_config(self) -> AppConfig: ...
    @property
    def environ(self) -> Mapping[str, str] | None: ...
    @property
    def overrides(self) -> Mapping[str, dict[str, Any]]: ...
    @property
    def records(self) -> Mapping[str, Any]: ...
    @property
    def metrics(self) -> EdgeMetrics: ...
    def manifests(self) -> dict[str, Any]: ...
    async def reload(self, only: str | None = None,
                     overlay: Mapping[str, Any] | None = None) -> dict[str, str]: ...


def _require_admin() -> None:
    who = current_principal.get()
    if who is not None and not who.can(Role.admin):
        raise HTTPException(403, f"this needs the admin role; you are {who.role.name}")


def mount_host_routes(host: Host) -> None:
    router = APIRouter()

    def plugin_or_404(pid: str) -> Any:
        record = host.records.get(pid)
        if record is None or not record.enabled:
            raise HTTPException(404, f"no plugin {pid!r} on {host.name}")
        return record

    def describe(record: Any) -> dict[str, Any]:
        plugin = record.plugin
        model = type(plugin).config_model if plugin is not None else None
        info = host.manifests().get(record.id, {})
        return {
            "id": record.id,
            "title": info.get("title", record.id),
            "version": info.get("version"),
            "enabled": record.enabled,
            "error": record.error,
            "menu": info.get("menu", []),
            "config_schema": model.model_json_schema() if model else None,
        }

    @router.get("/plugins")
    async def list_plugins() -> dict[str, Any]:
        return {"edge": host.name,
                "plugins": [describe(r) for r in host.records.values() if r.enabled]}

    @router.get("/plugins/{pid}/config")
    async def get_config(pid: str) -> dict[str, Any]:
        record = plugin_or_404(pid)
        plugin = record.plugin
        if plugin is None:
            raise HTTPException(409, f"plugin {pid} is not running: {record.error}")
        model = type(plugin).config_model
        sources = plugin.config_sources
        return {
            "id": pid,
            "values": plugin.config.model_dump(mode="json") if plugin.config is not None else {},
            "sources": dict(sources.origin) if sources else {},
            "schema": model.model_json_schema() if model else None,
            "file": str(host.app_config.plugin_file(pid)),
        }

    @router.put("/plugins/{pid}/config")
    async def put_config(pid: str, values: dict[str, Any] = Body(...)) -> dict[str, Any]:
        _require_admin()
        record = plugin_or_404(pid)
        plugin = record.plugin
        if plugin is None:
            raise HTTPException(409, f"plugin {pid} is not running: {record.error}")
        model = type(plugin).config_model
        try:
            # The document itself must be valid: an environment override of a key must not
            # let an invalid value of that key into the file (it would break the next start).
            check_plugin_document(pid, model, host.app_config, values, host.environ,
                                  defaults=host.overrides.get(pid))
        except ConfigError as exc:
            raise HTTPException(422, {"message": str(exc), "key": exc.key, "reason": exc.reason}) from exc
        write_plugin_file(host.app_config, pid, values)
        result = await host.reload(only=pid)
        return {**(await get_config(pid)), "reload": result.get(pid, "unchanged")}

    @router.post("/reload")
    async def reload_all() -> dict[str, Any]:
        _require_admin()
        return {"results": await host.reload()}

    @router.get("/operations")
    async def operations() -> dict[str, Any]:
        """Every plugin route an agent may call (isthmus.mcp makes one MCP tool of each)."""
        return {"edge": host.name, "operations": plugin_operations(host)}

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """This host's Prometheus metrics; any principal, the ``metrics`` role included."""
        body, content_type = host.metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"cache-control": "no-store"})

    host.app.include_router(router, prefix="/_edge")


# Routes every plugin has that an agent never calls itself (isthmus.mcp manages sessions).
_NOT_OPERATIONS = frozenset({"register_session", "unregister_session/{sid}", "ui_config", "list_sessions"})


def plugin_operations(host: Host) -> list[dict[str, Any]]:
    """Each exposed plugin route: plugin, method, path (under the plugin), path parameters,
    description (the handler's docstring) and, for FastAPI routes, query and body schemas.

    Not exposed: the routes every plugin has, routes added with ``include_in_schema=False``
    and the paths a plugin lists in its ``mcp_exclude`` class attribute. A plugin names its
    own tools in ``mcp_tools`` (tool name -> "METHOD path"): those operations carry ``tool``."""
    from fastapi.openapi.utils import get_openapi
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    spaces = {}
    for pid, record in host.records.items():
        if record.enabled and record.plugin is not None:
            spaces[str(getattr(record.plugin, "namespace", f"/{pid}")).strip("/")] = record.plugin

    def exposed(full: str) -> tuple[str, str] | None:
        plugin_name, _, path = full.lstrip("/").partition("/")
        plugin = spaces.get(plugin_name)
        if plugin is None or not path or path in _NOT_OPERATIONS or path in getattr(plugin, "mcp_exclude", ()):
            return None
        return plugin_name, path

    def params_of(path: str) -> list[str]:
        return [p.strip("{}").partition(":")[0] for p in path.split("/") if p.startswith("{")]

    out: list[dict[str, Any]] = []
    for route in host.app.routes:  # add_route_* routes: plain Starlette routes at the top level
        if not isinstance(route, Route) or isinstance(route, APIRoute) or (where := exposed(route.path)) is None:
            continue
        doc = inspect.getdoc(inspect.unwrap(route.endpoint)) or ""  # the plugin's handler (Plugin._wrap)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            out.append({"plugin": where[0], "method": method, "path": where[1], "params": params_of(where[1]),
                        "description": doc})
    try:  # register_routes routes: FastAPI describes them (include_in_schema=False ones it leaves out)
        spec = get_openapi(title="operations", version="0", routes=host.app.routes)
    except Exception:  # noqa: BLE001 - a model FastAPI cannot describe: those routes stay callable over REST
        spec = {}
    defs = spec.get("components", {}).get("schemas", {})
    for full, methods in spec.get("paths", {}).items():
        if (where := exposed(full)) is None or where[1].startswith("_"):
            continue
        for method, detail in methods.items():
            op: dict[str, Any] = {"plugin": where[0], "method": method.upper(), "path": where[1],
                                  "params": params_of(where[1]),
                                  "description": detail.get("description") or detail.get("summary", ""),
                                  "query": {p["name"]: p.get("schema", {}) for p in detail.get("parameters", [])
                                            if p.get("in") == "query"}}
            body = detail.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body:
                op["body"] = body.get("schema", {})
                op["defs"] = defs
            out.append(op)
    for plugin_name, plugin in spaces.items():  # tools a plugin names itself: ``mcp_tools``
        for tool, route in (getattr(plugin, "mcp_tools", None) or {}).items():
            method, _, path = str(route).partition(" ")
            for op in out:
                if op["plugin"] == plugin_name and op["method"] == method.upper() and op["path"] == path.strip("/"):
                    op["tool"] = tool
    return out
