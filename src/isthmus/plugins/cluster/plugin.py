"""cluster: where every node is, what state it is in, how healthy, which jobs run on it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import Request

from ... import schedulers
from ...config import write_plugin_file
from ...errors import ConfigError, PluginError, SchedulerError
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...types import Role
from .config import ClusterConfig
from .mapping import NodeMapping
from .topology import Topology, from_dict, load_topology, unplaced
from .view import CATALOG, ClusterView, History

log = logging.getLogger("isthmus.plugins.cluster")


class PluginCluster(Plugin):
    plugin_name = "cluster"
    title = "Cluster"
    description = "Nodes placed in racks and rooms, health rolled up, jobs per node, cluster metrics."
    version = "0.1.0"
    ui_module = "ui.js"
    config_model = ClusterConfig
    ui_config = {
        "icon": "🗄",
        "title": "Cluster",
        "description": "Rooms, racks and nodes coloured by health; partitions; node list.",
        "monitors": [{"id": "summary", "title": "Summary", "type": "raw", "endpoint": "summary", "refresh": 5}],
        "notifications": {"topic": "cluster", "id_field": "name", "state_field": "severity"},
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.mapping = self.config.mapping
        self.view: ClusterView | None = None
        self.history = History(self.config.history)
        self._topology: Topology | None = None
        self._refreshing: asyncio.Task[ClusterView] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        for path, handler in (("summary", self.summary), ("partitions", self.partitions), ("nodes", self.nodes),
                              ("node/{name}", self.node), ("rooms", self.rooms), ("room/{room_id}", self.room),
                              ("metrics_catalog", self.metrics_catalog), ("metric/{metric_id}", self.metric),
                              ("mapping", self.get_mapping)):
            self.add_route_get(path, handler)
        self.add_route_put("mapping", self.put_mapping)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="cluster", label="Cluster", icon="server", order=50, items=[
            MenuItem(id="cluster-rooms", label="Rooms", path="/cluster/rooms", icon="grid"),
            MenuItem(id="cluster-nodes", label="Nodes", path="/cluster/nodes", icon="list"),
            MenuItem(id="cluster-partitions", label="Partitions", path="/cluster/partitions", icon="layers"),
        ])]

    async def on_startup(self) -> None:
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="cluster-refresh")

    async def on_shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def on_config_reload(self, config: ClusterConfig) -> None:
        self.mapping = config.mapping
        self._topology = None
        self.history = History(config.history)

    # -- snapshots -----------------------------------------------------------------------------

    def _load_topology(self, names: list[str], system: Any) -> Topology:
        if self._topology is None:
            if self.config.topology_file:
                self._topology = load_topology(self.config.topology_file)
            elif hasattr(system, "topology"):
                self._topology = from_dict(system.topology(), f"<{system.name}>")
        return self._topology or unplaced(sorted(names))

    async def _build(self) -> ClusterView:
        try:
            system = schedulers.current()
        except LookupError as exc:
            raise PluginError(str(exc), 503) from exc
        try:
            nodes, jobs, partitions = await asyncio.gather(system.nodes(), system.jobs(include_finished=False),
                                                           system.partitions())
        except SchedulerError as exc:
            raise PluginError(f"the scheduler did not answer: {exc}", 502) from exc
        try:
            topology = self._load_topology([n.name for n in nodes], system)
        except ConfigError as exc:
            raise PluginError(f"topology error: {exc}", 500) from exc
        view = ClusterView(nodes, jobs, partitions, topology, self.mapping, self.config.thresholds)
        self._announce(self.view, view)
        self.view = view
        self.history.record(view)
        return view

    def _announce(self, old: ClusterView | None, new: ClusterView) -> None:
        """Notify the ``cluster`` topic of nodes and racks whose severity changed."""
        if old is None:
            return
        changes = []
        for name, node in new.nodes.items():
            before = old.nodes.get(name)
            if before is not None and before["severity"] != node["severity"]:
                changes.append({"kind": "node", "name": name, "from": before["severity"], "severity": node["severity"],
                                "state": node["state"], "reason": node["reason"], "rack": node["rack"]})
        for rid, rack in new.racks.items():
            before = old.racks.get(rid)
            if before is not None and before["severity"] != rack["severity"]:
                changes.append({"kind": "rack", "name": rid, "from": before["severity"], "severity": rack["severity"],
                                "room": rack["room"]})
        for change in changes[:200]:
            self.notify("cluster", change)

    async def current(self, force: bool = False) -> ClusterView:
        fresh = self.view is not None and time.time() - self.view.time < self.config.refresh_interval
        if fresh and not force:
            return self.view  # type: ignore[return-value]
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._build())
        return await asyncio.shield(self._refreshing)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.current(force=True)
            except Exception as exc:  # noqa: BLE001 - keep refreshing; requests report errors
                log.warning("cluster snapshot failed: %s", exc)
            await asyncio.sleep(self.config.refresh_interval)

    @staticmethod
    def _q(request: Request, name: str) -> str | None:
        return request.query_params.get(name) or None

    # -- routes -------------------------------------------------------------------------------

    async def summary(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        room = self._q(request, "room")
        if room is not None and room not in view.rooms:
            raise PluginError(f"no room {room!r}", 404)
        return view.summary(room)

    async def partitions(self, request: Request) -> dict[str, Any]:
        return {"partitions": (await self.current()).partitions(self._q(request, "room"))}

    async def nodes(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        nodes = view.select(self._q(request, "room"), self._q(request, "state"), self._q(request, "partition"))
        return {"nodes": [{k: v for k, v in n.items() if k != "metrics"} for n in nodes]}

    async def node(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        name = request.path_params["name"]
        node = view.nodes.get(name)
        if node is None:
            raise PluginError(f"no node {name!r}", 404)
        jobs = [j.to_dict() for j in view.jobs if name in j.nodes]
        return {**node, "jobs": jobs, "history": self.history.get(name)}

    async def rooms(self, request: Request) -> dict[str, Any]:
        return {"rooms": list((await self.current()).rooms.values())}

    async def room(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        room_id = request.path_params["room_id"]
        room = view.rooms.get(room_id)
        if room is None:
            raise PluginError(f"no room {room_id!r}; GET rooms lists them", 404)
        racks = [view.racks[k.id] for k in view.topology.rooms[room_id].racks]
        return {**room, "racks": racks}

    async def metrics_catalog(self, request: Request) -> dict[str, Any]:
        return {"metrics": CATALOG}

    async def metric(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        try:
            return view.metric(request.path_params["metric_id"], request.query_params.get("scope", "cluster"))
        except KeyError as exc:
            raise PluginError(str(exc.args[0]), 404) from exc

    async def get_mapping(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        return {"mapping": self.mapping.describe(), "unmatched": view.unmatched,
                "mapped": len(view.nodes) - len(view.unmatched)}

    async def put_mapping(self, request: Request) -> dict[str, Any]:
        self.require_role(Role.admin)
        try:
            mapping = NodeMapping.model_validate(await request.json())
        except ValueError as exc:
            raise PluginError(f"invalid mapping: {exc}", 422) from exc
        self.mapping = mapping
        if self.host is not None and getattr(self.host, "app_config", None) is not None:
            current = dict(self.config_sources.values) if self.config_sources else {}
            dedicated = {k: v for k, v in current.items() if self.config_sources
                         and self.config_sources.origin.get(k, "").endswith("plugin.yaml")}
            write_plugin_file(self.host.app_config, self.instance_name,
                              {**dedicated, "mapping": mapping.model_dump()})
        view = await self.current(force=True)
        return {"mapping": mapping.describe(), "unmatched": view.unmatched}
