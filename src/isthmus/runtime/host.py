"""PluginHost: the plugins of one process (an edge, or the bridge's own) and their lifecycle.

It decides which plugins are enabled (a disabled one is never imported), builds each
with its validated config, mounts its routes in one FastAPI app, runs the lifecycle
hooks with error isolation, reloads configs atomically and reaps idle sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from ..config import AppConfig, ConfigSources, load_plugin_config, plugin_enabled
from ..errors import ConfigError
from ..sdk.calls import EdgeCalls
from ..sdk.plugin import NotifySink, Plugin, PluginContext, construct, install_error_handlers, load_class, registry
from ..sdk.registry import entry_points, is_import_spec
from ..sdk.topology import TopologyView
from .metrics import EdgeMetrics

log = logging.getLogger("isthmus.host")

# Built-ins that need something special are off unless enabled in the config.
BUILTIN_DEFAULT_OFF = frozenset({"simulator", "workflows"})  # workflows: a bridge plugin (--plugins)
SHUTDOWN_WAIT = 10.0
REAP_INTERVAL = 60.0
RESERVED_PREFIX = "_"


@dataclass
class PluginRecord:
    """What the host knows of one plugin, loaded or not."""

    id: str
    spec: str
    enabled: bool
    plugin: Plugin | None = None
    error: str | None = None
    builtin: bool = False


def _is_builtin(ep: importlib.metadata.EntryPoint) -> bool:
    return ep.value.startswith("isthmus.plugins.")


def select_plugins(app_config: AppConfig, requested: list[str] | None,
                   environ: Mapping[str, str] | None = None) -> list[tuple[str, str, bool]]:
    """(id, spec, enabled) for every plugin this process should know about.

    With ``requested`` (``--plugins``) exactly those; otherwise every installed
    built-in that is on by default plus any installed plugin the config enables.
    ``enabled: false`` in the config always wins.
    """
    eps = entry_points()
    chosen: list[tuple[str, str, bool]] = []
    if requested:
        for spec in requested:
            pid = spec.rpartition(":")[2] if is_import_spec(spec) else spec
            chosen.append((pid, spec, True))
    else:
        for name, ep in sorted(eps.items()):
            default = _is_builtin(ep) and name not in BUILTIN_DEFAULT_OFF
            chosen.append((name, name, default))
    out = []
    for pid, spec, default in chosen:
        enabled = plugin_enabled(app_config, pid, default, environ) if not is_import_spec(spec) else \
            default
        out.append((pid, spec, enabled))
    return out


class PluginHost:
    """Builds and runs a set of plugins inside one FastAPI app."""

    def __init__(self, app_config: AppConfig, requested: list[str] | None = None, *,
                 notify: NotifySink | None = None, name: str = "edge",
                 environ: Mapping[str, str] | None = None,
                 overrides: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.app_config = app_config
        self.name = name
        self.environ = environ
        self.notify_sink = notify
        self.overrides = dict(overrides or {})  # plugin id -> values layered under env (demo)
        self.app = FastAPI(title=f"isthmus {name}", docs_url=None, redoc_url=None, openapi_url=None)
        self.app.state.isthmus_host = self
        # every route (add_route_*, register_routes, the host's own) answers errors through the
        # one mapping, isthmus.sdk.plugin.error_response
        install_error_handlers(self.app)
        self.records: dict[str, PluginRecord] = {}
        self.metrics = EdgeMetrics(self)  # GET /_edge/metrics; the dispatcher counts plugin errors here
        self.view = TopologyView()  # edges' summaries, kept from the bridge's deltas (when watched)
        self.topology_requester: Any = None  # async callable() set by the edge service: start watching
        self._topology_ready = asyncio.Event()
        self._topology_changed = False  # since the hooks last took the view
        self._topology_task: asyncio.Future[None] | None = None
        self._requested = requested
        self._reload_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self.on_manifest_change: Any = None  # callable() set by the edge service
        self.edge_calls: EdgeCalls | None = None  # Plugin.edge_calls; set by the bridge or the edge service

    # -- building -------------------------------------------------------------------------

    def load(self) -> None:
        from .routes import mount_host_routes

        mount_host_routes(self)
        eps = entry_points()
        for pid, spec, enabled in select_plugins(self.app_config, self._requested, self.environ):
            ep = eps.get(spec)
            record = PluginRecord(pid, spec, enabled, builtin=bool(ep and _is_builtin(ep)))
            if not enabled:
                log.info("plugin %s is disabled; not imported", pid)
                self.records[pid] = record
                continue
            self._build(record)
            if record.plugin is not None and record.id != pid:
                self.records[record.id] = record
            else:
                self.records[pid] = record

    def _config_for(self, pid: str, cls: type[Plugin]) -> tuple[Any, ConfigSources]:
        app = self.app_config
        if pid in self.overrides:
            # host-level defaults (the demo's) sit just above the model defaults
            section = {**self.overrides[pid], **app.plugin_section(pid)}
            app = app.model_copy(update={"plugins": {**app.plugins, pid: section}})
            app.path = self.app_config.path
        return load_plugin_config(pid, cls.config_model, app, self.environ)

    def _build(self, record: PluginRecord) -> None:
        try:
            cls = load_class(record.spec)
            record.id = cls.key() if is_import_spec(record.spec) else record.id
            if record.id.startswith(RESERVED_PREFIX):
                raise ValueError(f"plugin names beginning with {RESERVED_PREFIX!r} are reserved")
            config, sources = self._config_for(record.id, cls)
            ctx = PluginContext(config=config, sources=sources, notify=self.notify_sink, host=self)
            plugin = construct(cls, ctx, self.app)
            plugin.mount_router(self.app)
            record.plugin = plugin
            registry.register(plugin)
        except ConfigError as exc:
            record.error = f"configuration error: {exc}"
            log.error("plugin %s not started: %s", record.id, record.error)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            log.exception("plugin %s failed to load", record.id)

    # -- lifecycle --------------------------------------------------------------------------

    def _ordered(self) -> list[PluginRecord]:
        """Loaded plugins, each after the ones it ``requires``."""
        loaded = {r.id: r for r in self.records.values() if r.plugin is not None and r.error is None}
        order: list[PluginRecord] = []
        seen: set[str] = set()

        def visit(pid: str, stack: tuple[str, ...]) -> None:
            if pid in seen or pid not in loaded or pid in stack:
                return
            plugin = loaded[pid].plugin
            assert plugin is not None  # `loaded` holds only records with a plugin
            for dep in type(plugin).requires:
                visit(dep, (*stack, pid))
            seen.add(pid)
            order.append(loaded[pid])

        for pid in loaded:
            visit(pid, ())
        return order

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """Startup/shutdown as an ASGI lifespan, for hosts served by a plain ASGI server."""
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    def active(self) -> list[Plugin]:
        return [r.plugin for r in self._ordered() if r.plugin is not None]

    async def startup(self) -> None:
        for record in self._ordered():
            assert record.plugin is not None
            try:
                await record.plugin.on_startup()
            except Exception as exc:
                record.error = f"startup failed: {type(exc).__name__}: {exc}"
                log.exception("plugin %s failed to start", record.id)
        self._reaper = asyncio.create_task(self._reap_loop(), name="session-ttl")

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for record in reversed(self._ordered()):
            plugin = record.plugin
            assert plugin is not None
            try:
                await asyncio.wait_for(plugin.close_all_sessions(), SHUTDOWN_WAIT)
                await asyncio.wait_for(plugin.on_shutdown(), SHUTDOWN_WAIT)
            except Exception:
                log.exception("plugin %s did not shut down cleanly", record.id)
            registry.unregister(record.id)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for plugin in self.active():
                await plugin.reap_sessions(now)

    def failed_plugin(self, pid: str) -> str | None:
        record = self.records.get(pid)
        if record is None or not record.enabled:
            return None
        return record.error

    # -- what others see ------------------------------------------------------------------

    def manifests(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pid, record in self.records.items():
            if not record.enabled:
                continue  # a disabled plugin appears nowhere
            if record.plugin is not None:
                try:
                    info = record.plugin.manifest()
                except Exception as exc:  # noqa: BLE001
                    info = {"name": pid, "title": pid, "version": "?", "ui_config": None, "menu": []}
                    record.error = record.error or f"manifest failed: {exc}"
            else:
                info = {"name": pid, "title": pid, "version": None, "ui_config": None, "menu": []}
            if record.error:
                info["error"] = record.error
            out[pid] = info
        return out

    # -- topology ---------------------------------------------------------------------------

    @property
    def topology(self) -> dict[str, Any]:
        """``{edge: summary}`` as last announced (empty unless watched; see ``wants_topology``)."""
        return self.view.edges

    def wants_topology(self) -> bool:
        """Whether any plugin overrides ``on_topology_change`` or sets ``watches_topology``.

        Only such edges are sent the topology: an edge with none costs the bridge nothing
        when others come and go.
        """
        return any(getattr(p, "watches_topology", False)
                   or type(p).on_topology_change is not Plugin.on_topology_change for p in self.active())

    async def ensure_topology(self, timeout: float = 5.0) -> dict[str, Any]:
        """The topology, asking the bridge for it first if this host does not watch it yet."""
        if not self.view.complete and self.topology_requester is not None:
            await self.topology_requester()
            try:
                await asyncio.wait_for(self._topology_ready.wait(), timeout)
            except TimeoutError:
                log.warning("the bridge did not send the topology within %g s", timeout)
        return self.view.edges

    def apply_topology(self, delta: dict[str, Any]) -> None:
        """Apply a snapshot or delta; plugins' ``on_topology_change`` run beside the caller,
        one at a time, with the latest view (a slow plugin skips views, never blocks frames)."""
        if not self.view.apply(delta):
            return
        if self.view.complete:
            self._topology_ready.set()
        self._topology_changed = True
        if self._topology_task is None or self._topology_task.done():
            self._topology_task = asyncio.ensure_future(self._run_topology_hooks())

    def topology_lost(self) -> None:
        """The link that fed the view closed: the next snapshot replaces it."""
        self.view.complete = False
        self._topology_ready.clear()

    async def _run_topology_hooks(self) -> None:
        while self._topology_changed:
            self._topology_changed = False
            edges = dict(self.view.edges)
            for plugin in self.active():
                try:
                    await plugin.on_topology_change(edges)
                except Exception:
                    log.exception("on_topology_change of %s failed", plugin.instance_name)

    # -- configuration reload -------------------------------------------------------------

    async def reload(self, only: str | None = None,
                     overlay: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Re-read every plugin's config chain; swap whole configs or keep the old one.

        Returns {plugin id: "reloaded" | "unchanged" | "error: ..."}.
        """
        results: dict[str, str] = {}
        async with self._reload_lock:
            for record in self._ordered():
                plugin = record.plugin
                assert plugin is not None
                if only is not None and record.id != only:
                    continue
                cls = type(plugin)
                try:
                    if overlay is not None and record.id == only:
                        config, sources = load_plugin_config(record.id, cls.config_model, self.app_config,
                                                             self.environ, overlay)
                    else:
                        config, sources = self._config_for(record.id, cls)
                except ConfigError as exc:
                    results[record.id] = f"error: {exc}"
                    log.error("config reload of %s rejected, old config stays: %s", record.id, exc)
                    continue
                if config == plugin.config:
                    results[record.id] = "unchanged"
                    continue
                old = plugin.config
                plugin.config, plugin.config_sources = config, sources
                try:
                    await plugin.on_config_reload(config)
                    results[record.id] = "reloaded"
                except Exception as exc:
                    plugin.config = old
                    results[record.id] = f"error: on_config_reload failed: {exc}"
                    log.exception("on_config_reload of %s failed; old config restored", record.id)
        if self.on_manifest_change is not None:
            self.on_manifest_change()
        return results
