"""The host's own routes under ``/_edge`` (reached through the bridge as ``/{edge}/_edge/...``).

Names beginning with ``_`` are reserved for these, so no plugin can shadow them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fastapi import APIRouter, Body, FastAPI, HTTPException

from ..config import AppConfig, check_plugin_document, write_plugin_file
from ..errors import ConfigError
from ..types import Role, current_principal


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

    host.app.include_router(router, prefix="/_edge")
