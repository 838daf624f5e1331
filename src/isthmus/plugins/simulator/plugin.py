"""simulator: a simulated HPC cluster as the edge's scheduler, with incidents and overrides."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from ... import schedulers
from ...errors import PluginError
from ...schedulers.simulated import INCIDENT_TYPES, METRICS, MODES, SimSize, SimulatedCluster
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...types import Role
from .config import SimulatorConfig


def _size(config: SimulatorConfig) -> SimSize:
    return SimSize(rooms=config.rooms, racks_per_room=config.racks_per_room,
                   cpu_nodes_per_rack=config.cpu_nodes_per_rack, gpu_racks_per_room=config.gpu_racks_per_room,
                   gpu_nodes_per_rack=config.gpu_nodes_per_rack)


class PluginSimulator(Plugin):
    plugin_name = "simulator"
    title = "Simulator"
    description = "A simulated cluster: incident modes, incidents with a duration, overrides with a TTL."
    version = "0.1.0"
    ui_module = "ui.js"
    config_model = SimulatorConfig
    ui_config = {
        "icon": "🧪",
        "title": "Simulator",
        "description": "Drive the simulated cluster: incident modes, incidents, overrides.",
        "forms": [
            {"id": "mode", "title": "Incident mode", "fields": [
                {"name": "mode", "type": "select", "options": list(MODES), "default": "full_ok"}],
             "submit": {"label": "Set mode", "endpoint": "set_incident_mode"}},
            {"id": "incident", "title": "Incident", "fields": [
                {"name": "type", "type": "select", "options": list(INCIDENT_TYPES)},
                {"name": "target", "type": "text", "label": "Node or rack", "required": True},
                {"name": "duration", "type": "number", "default": 300}],
             "submit": {"label": "Start incident", "style": "warning", "endpoint": "incident"}},
        ],
        "monitors": [{"id": "status", "title": "Status", "type": "raw", "endpoint": "status", "refresh": 5}],
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.sim = SimulatedCluster(seed=self.config.seed, size=_size(self.config), workload=self.config.workload)
        if self.config.mode != "full_ok":
            self.sim.set_incident_mode(self.config.mode)
        schedulers.use(self.sim)  # from now on queue_info, cluster and psij see this cluster
        self._ticker: asyncio.Task[None] | None = None
        self.add_route_get("status", self.status)
        self.add_route_get("metrics", self.metrics)
        self.add_route_post("set_incident_mode", self.set_incident_mode)
        self.add_route_post("incident", self.incident)
        self.add_route_get("incidents", self.incidents)
        self.add_route_get("overrides", self.list_overrides)
        self.add_route_post("overrides", self.add_override)
        self.add_route_delete("overrides/{override_id}", self.delete_override)
        self.add_route_delete("overrides", self.clear_overrides)
        self.add_route_post("restart", self.restart)
        self.add_route_post("tick", self.tick)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="simulator", label="Simulator", icon="flask", order=200,
                            items=[MenuItem(id="simulator-panel", label="Incidents & overrides", path="/simulator")])]

    async def on_startup(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="simulator-tick")

    async def on_shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if schedulers.current() is self.sim:
            schedulers.use(None)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            self.sim.tick(self.config.tick_interval * self.config.speed)

    @staticmethod
    def _mutating() -> None:
        Plugin.require_role(Role.user)

    # -- routes -------------------------------------------------------------------------------

    async def status(self, request: Request) -> dict[str, Any]:
        return self.sim.status()

    async def metrics(self, request: Request) -> dict[str, Any]:
        return {"metrics": [{"id": k, "unit": v} for k, v in METRICS.items()],
                "states": ["idle", "allocated", "mixed", "draining", "drained", "down", "reserved", "maint",
                           "unknown"],
                "modes": list(MODES), "incidents": list(INCIDENT_TYPES), "racks": sorted(self.sim.racks)}

    async def set_incident_mode(self, request: Request) -> dict[str, Any]:
        self._mutating()
        body = await request.json()
        try:
            return self.sim.set_incident_mode(str(body.get("mode")), body.get("counts"))
        except ValueError as exc:
            raise PluginError(str(exc), 422) from exc

    async def incident(self, request: Request) -> dict[str, Any]:
        self._mutating()
        body = await request.json()
        try:
            inc = self.sim.incident(str(body.get("type")), str(body.get("target")), body.get("duration", 300))
        except ValueError as exc:
            raise PluginError(str(exc), 422) from exc
        return {"id": inc.id, "type": inc.type, "target": inc.target, "until": inc.until}

    async def incidents(self, request: Request) -> dict[str, Any]:
        now = self.sim.now
        return {"incidents": [{"id": i.id, "type": i.type, "target": i.target,
                               "expires_in": None if i.until is None else round(i.until - now, 1)}
                              for i in self.sim.incidents.values()]}

    async def list_overrides(self, request: Request) -> dict[str, Any]:
        return {"overrides": [o.to_dict(self.sim.now) for o in self.sim.overrides.values()]}

    async def add_override(self, request: Request) -> dict[str, Any]:
        self._mutating()
        body = await request.json()
        try:
            ov = self.sim.add_override(str(body.get("target")), str(body.get("kind", "metric")),
                                       str(body.get("key", "state")), body.get("value"), body.get("ttl", 600))
        except ValueError as exc:
            raise PluginError(str(exc), 422) from exc
        return ov.to_dict(self.sim.now)

    async def delete_override(self, request: Request) -> dict[str, Any]:
        self._mutating()
        override_id = request.path_params["override_id"]
        if not self.sim.delete_override(override_id):
            raise PluginError(f"no override {override_id}", 404)
        return {"deleted": override_id}

    async def clear_overrides(self, request: Request) -> dict[str, Any]:
        self._mutating()
        return {"deleted": self.sim.clear_overrides()}

    async def restart(self, request: Request) -> dict[str, Any]:
        self._mutating()
        self.sim.build()
        return self.sim.status()

    async def tick(self, request: Request) -> dict[str, Any]:
        """Advance simulated time now (``{"seconds": n}``) — for tests and demos."""
        self._mutating()
        body = await request.json()
        seconds = float(body.get("seconds", 1))
        if not 0 < seconds <= 86400:
            raise PluginError("seconds must be in (0, 86400]", 422)
        self.sim.tick(seconds)
        self.sim.changed()  # asked for through Isthmus: views built before it are stale
        return self.sim.status()
