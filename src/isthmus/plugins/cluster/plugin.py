"""cluster: where every node is, what state it is in, how healthy, which jobs run on it.

One snapshot (``ClusterView``) serves every read until it is ``refresh_interval`` old, or
until something changed through Isthmus: the snapshot remembers the scheduler object and
its ``generation`` (``BatchSystem.changed()``: a simulator incident, mode, override, a drain
here ...) and this plugin's own generation (mapping, config); a read that finds either moved
builds a new one first. That costs one tuple comparison per read, whichever plugin made the
change, in this process. Every answer made from a snapshot says when its data was read:
``as_of`` (unix seconds) and ``age`` (seconds). A snapshot built at least ``history_interval``
after the last sample also becomes one in the history ring (``history.py``, ``GET history``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Protocol, runtime_checkable

from fastapi import Request

from ... import schedulers
from ...config import write_plugin_file
from ...errors import ConfigError, PluginError
from ...schedulers.base import BatchSystem
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...types import Role
from .config import ClusterConfig
from .history import METRICS, History, label, select
from .mapping import NodeMapping
from .topology import Topology, from_dict, load_topology, unplaced
from .view import CATALOG, ClusterView

log = logging.getLogger("isthmus.plugins.cluster")
MAX_REASON = 200

# what a snapshot was built from: the scheduler object, its generation, this plugin's generation
ViewKey = tuple[BatchSystem, int, int]


@runtime_checkable
class NodeControl(Protocol):
    """A scheduler that drains and resumes nodes through Isthmus (today: the simulator).

    An implementation calls ``BatchSystem.changed()`` after each change.
    """

    async def drain(self, node: str, reason: str) -> None: ...

    async def resume(self, node: str) -> None: ...


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
        self.history = History(self.config.history, self.config.history_interval)
        self._topology: Topology | None = None
        self._refreshing: asyncio.Task[ClusterView] | None = None
        self._refreshing_key: ViewKey | None = None
        self._view_key: ViewKey | None = None
        self._generation = 0  # bumped when this plugin's own inputs change (mapping, config, a drain)
        self._builds = itertools.count(1)
        self._installed = 0  # the build number of self.view: an older build never replaces a newer one
        self._loop_task: asyncio.Task[None] | None = None
        for path, handler in (("summary", self.summary), ("partitions", self.partitions), ("nodes", self.nodes),
                              ("node/{name}", self.node), ("rooms", self.rooms), ("room/{room_id}", self.room),
                              ("metrics_catalog", self.metrics_catalog), ("metric/{metric_id}", self.metric),
                              ("mapping", self.get_mapping), ("history", self.get_history)):
            self.add_route_get(path, handler)
        self.add_route_put("mapping", self.put_mapping)
        self.add_route_post("node/{name}/drain", self.drain)
        self.add_route_post("node/{name}/resume", self.resume)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="cluster", label="Cluster", icon="server", order=50, items=[
            MenuItem(id="cluster-rooms", label="Rooms", path="/cluster/rooms", icon="grid"),
            MenuItem(id="cluster-nodes", label="Nodes", path="/cluster/nodes", icon="list"),
            MenuItem(id="cluster-partitions", label="Partitions", path="/cluster/partitions", icon="layers"),
            MenuItem(id="cluster-charts", label="Charts", path="/cluster/charts", icon="activity"),
            MenuItem(id="cluster-wallboard", label="Wallboard", path="/cluster/wallboard", icon="monitor"),
        ])]

    async def on_startup(self) -> None:
        self._loop_task = asyncio.create_task(self._refresh_loop(), name="cluster-refresh")

    async def on_shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def on_config_reload(self, config: ClusterConfig) -> None:
        self.mapping = config.mapping
        self._topology = None
        if config.history != self.history.size:  # a new size starts a new ring; a new interval keeps it
            self.history = History(config.history, config.history_interval)
        self.history.interval = config.history_interval
        self.invalidate()

    # -- snapshots -----------------------------------------------------------------------------

    def _load_topology(self, names: list[str], system: Any) -> Topology:
        if self._topology is None:
            if self.config.topology_file:
                self._topology = load_topology(self.config.topology_file)
            elif hasattr(system, "topology"):
                self._topology = from_dict(system.topology(), f"<{system.name}>")
        return self._topology or unplaced(sorted(names))

    @staticmethod
    def _system() -> BatchSystem:
        try:
            return schedulers.current()
        except LookupError as exc:
            raise PluginError(str(exc), 503) from exc

    def _key(self, system: BatchSystem) -> ViewKey:
        return (system, system.generation, self._generation)

    def invalidate(self) -> None:
        """The next read builds a new snapshot (this plugin's own inputs changed)."""
        self._generation += 1

    async def _build(self, system: BatchSystem, key: ViewKey) -> ClusterView:
        number = next(self._builds)
        as_of = time.time()  # before asking: whatever changes after this may be missing
        # a SchedulerError answers its own status (502/503/504, isthmus.errors)
        nodes, jobs, partitions = await asyncio.gather(system.nodes(), system.jobs(include_finished=False),
                                                       system.partitions())
        try:
            topology = self._load_topology([n.name for n in nodes], system)
        except ConfigError as exc:
            raise PluginError(f"topology error: {exc}", 500) from exc
        view = ClusterView(nodes, jobs, partitions, topology, self.mapping, self.config.thresholds, as_of=as_of)
        if number < self._installed:
            return view  # a newer snapshot is already in place: answer with this one, keep that one
        self._announce(self.view, view)
        self.view, self._view_key, self._installed = view, key, number
        clock = getattr(system, "now", None)  # a scheduler's own time (the simulator's), for job waits
        self.history.maybe_record(view, clock if isinstance(clock, (int, float)) else None)
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
        """The snapshot, rebuilt first when ``force``d, too old, or anything changed since (see top)."""
        system = self._system()
        key = self._key(system)
        view = self.view
        if view is not None and not force and self._view_key == key \
                and time.time() - view.time < self.config.refresh_interval:
            return view
        if self._refreshing is None or self._refreshing.done() or self._refreshing_key != key:
            # a build started before the change would answer without it: start one after it
            self._refreshing_key = key
            self._refreshing = asyncio.create_task(self._build(system, key))
        return await asyncio.shield(self._refreshing)

    @staticmethod
    def _as_of(view: ClusterView) -> dict[str, float]:
        """When the answer's data was read: ``as_of`` (unix seconds) and its ``age`` (seconds)."""
        return {"as_of": round(view.time, 3), "age": round(max(0.0, time.time() - view.time), 3)}

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
        return {**view.summary(room), **self._as_of(view)}

    async def partitions(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        return {"partitions": view.partitions(self._q(request, "room")), **self._as_of(view)}

    async def nodes(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        nodes = view.select(self._q(request, "room"), self._q(request, "state"), self._q(request, "partition"))
        if request.query_params.get("metrics") in ("1", "true"):  # for lists sorted by temperature, power...
            return {"nodes": nodes, **self._as_of(view)}
        return {"nodes": [{k: v for k, v in n.items() if k != "metrics"} for n in nodes], **self._as_of(view)}

    async def node(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        name = request.path_params["name"]
        node = view.nodes.get(name)
        if node is None:
            raise PluginError(f"no node {name!r}", 404)
        jobs = [j.to_dict() for j in view.jobs if name in j.nodes]
        metrics = ("util", "load", "temperature", "power")
        columns = self.history.read([("node", name, m) for m in metrics])
        history = {"time": columns[0], **dict(zip(metrics, columns[1:], strict=True))}
        return {**node, "jobs": jobs, "history": history, **self._as_of(view)}

    async def rooms(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        return {"rooms": list(view.rooms.values()), **self._as_of(view)}

    async def room(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        room_id = request.path_params["room_id"]
        room = view.rooms.get(room_id)
        if room is None:
            raise PluginError(f"no room {room_id!r}; GET rooms lists them", 404)
        racks = [view.racks[k.id] for k in view.topology.rooms[room_id].racks]
        return {**room, "racks": racks, **self._as_of(view)}

    async def metrics_catalog(self, request: Request) -> dict[str, Any]:
        return {"metrics": CATALOG}

    async def metric(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        try:
            value = view.metric(request.path_params["metric_id"], request.query_params.get("scope", "cluster"))
        except KeyError as exc:
            raise PluginError(str(exc.args[0]), 404) from exc
        return {**value, **self._as_of(view)}

    async def get_history(self, request: Request) -> dict[str, Any]:
        """``GET history?metric=&node=|partition=|room=&since=``: columns for charts; without
        ``metric``, what is kept (metrics and scopes, interval, samples, bytes)."""
        view = await self.current()
        q = request.query_params
        if not q.get("metric"):
            return {**self.history.catalog(), **self._as_of(view)}
        try:
            since = float(q["since"]) if q.get("since") else None
        except ValueError as exc:
            raise PluginError("since must be unix seconds (a number)", 422) from exc
        try:
            scope, keys = select(self.history, view, q.get("metric"), q.get("node"), q.get("partition"),
                                 q.get("room"))
        except LookupError as exc:
            raise PluginError(str(exc.args[0]), 404) from exc
        except ValueError as exc:
            raise PluginError(str(exc), 422) from exc
        several_targets = len({k[1] for k in keys}) > 1
        several_metrics = len({k[2] for k in keys}) > 1
        return {"scope": scope, "interval": self.history.interval,
                "series": [{"label": label(k, several_targets, several_metrics), "target": k[1], "metric": k[2],
                            "unit": METRICS[k[2]].unit} for k in keys],
                "data": self.history.read(keys, since), **self._as_of(view)}

    async def get_mapping(self, request: Request) -> dict[str, Any]:
        view = await self.current()
        return {"mapping": self.mapping.describe(), "unmatched": view.unmatched,
                "mapped": len(view.nodes) - len(view.unmatched), **self._as_of(view)}

    async def put_mapping(self, request: Request) -> dict[str, Any]:
        self.require_role(Role.admin)
        try:
            mapping = NodeMapping.model_validate(await request.json())
        except ValueError as exc:
            raise PluginError(f"invalid mapping: {exc}", 422) from exc
        self.mapping = mapping
        self.invalidate()
        if self.host is not None and getattr(self.host, "app_config", None) is not None:
            current = dict(self.config_sources.values) if self.config_sources else {}
            dedicated = {k: v for k, v in current.items() if self.config_sources
                         and self.config_sources.origin.get(k, "").endswith("plugin.yaml")}
            write_plugin_file(self.host.app_config, self.instance_name,
                              {**dedicated, "mapping": mapping.model_dump()})
        view = await self.current()
        return {"mapping": mapping.describe(), "unmatched": view.unmatched, **self._as_of(view)}

    # -- changes through Isthmus: visible in the next read --------------------------------------

    def _control(self) -> NodeControl:
        system = self._system()
        if not isinstance(system, NodeControl):
            raise PluginError(f"the {system.name} scheduler offers no drain through Isthmus "
                              "(drain with its own tools; the view shows it within refresh_interval)", 501)
        return system

    async def _known(self, request: Request) -> str:
        name = str(request.path_params["name"])
        if name not in (await self.current()).nodes:
            raise PluginError(f"no node {name!r}", 404)
        return name

    async def _changed_node(self, name: str) -> dict[str, Any]:
        self.invalidate()  # even for a backend that forgot BatchSystem.changed()
        view = await self.current()
        node = {k: v for k, v in view.nodes[name].items() if k != "metrics"} if name in view.nodes else {}
        return {**node, "name": name, **self._as_of(view)}

    async def drain(self, request: Request) -> dict[str, Any]:
        """``POST node/{name}/drain {"reason"}`` (admin): no new jobs there; answers the node as now."""
        self.require_role(Role.admin)
        control = self._control()
        try:
            body = await request.json()
        except ValueError as exc:
            raise PluginError("send {\"reason\": \"why\"}", 422) from exc
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise PluginError("a drain needs a reason: {\"reason\": \"why\"}", 422)
        if len(reason) > MAX_REASON or any(ord(c) < 0x20 or ord(c) == 0x7F for c in reason):
            raise PluginError(f"the reason must be one line of at most {MAX_REASON} characters", 422)
        name = await self._known(request)
        await control.drain(name, reason.strip())
        return await self._changed_node(name)

    async def resume(self, request: Request) -> dict[str, Any]:
        """``POST node/{name}/resume`` (admin): undo a drain made here; answers the node as now."""
        self.require_role(Role.admin)
        control = self._control()
        name = await self._known(request)
        await control.resume(name)
        return await self._changed_node(name)
