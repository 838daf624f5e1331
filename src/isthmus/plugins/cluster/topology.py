"""The machine room as YAML: sites → rooms → racks → slots, nodes placed by hostlist.

    sites:
      - id: main
        name: Main data centre
        rooms:
          - id: room-a
            racks:
              - id: r01
                slots: 42
                nodes: "c[001-040]"          # slots 1, 2, ... in order
              - id: r02
                nodes:
                  - {name: "gpu[01-04]", slot: 1, height: 2}   # slots 1, 3, 5, 7
    placements:                              # optional: more nodes into declared racks
      - {rack: r01, nodes: "c[041-042]", slot: 41}

Errors name the file and line: a node in two places, a rack that is not declared, a
malformed hostlist, a slot outside the rack.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError
from ...schedulers.hostlist import HostlistError, expand


@dataclass
class Placement:
    name: str
    site: str
    room: str
    rack: str
    slot: int


@dataclass
class Rack:
    id: str
    name: str
    room: str
    site: str
    slots: int
    nodes: list[Placement] = field(default_factory=list)


@dataclass
class Room:
    id: str
    name: str
    site: str
    racks: list[Rack] = field(default_factory=list)


@dataclass
class Topology:
    rooms: dict[str, Room] = field(default_factory=dict)
    racks: dict[str, Rack] = field(default_factory=dict)
    placements: dict[str, Placement] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)  # id -> name

    def locate(self, node: str) -> Placement | None:
        return self.placements.get(node)


class _Loader(yaml.SafeLoader):
    """Keeps the line of every mapping as ``__line__`` for error messages."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__lines__"] = {k.value: v.start_mark.line + 1 for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.topo = Topology()

    def error(self, message: str, item: Any, key: str | None = None) -> ConfigError:
        line = None
        if isinstance(item, dict):
            line = (item.get("__lines__") or {}).get(key) if key else None
            line = line or item.get("__line__")
        where = f"{self.source}, line {line}" if line else self.source
        return ConfigError(message, file=where)

    def names(self, expr: Any, item: Any) -> list[str]:
        try:
            return expand(str(expr))
        except HostlistError as exc:
            raise self.error(f"malformed node range: {exc}", item, "nodes") from exc

    def place(self, rack: Rack, names: list[str], slot: int, height: int, item: Any) -> None:
        for i, name in enumerate(names):
            at = slot + i * height
            if name in self.topo.placements:
                other = self.topo.placements[name]
                raise self.error(f"node {name} is placed twice (already in rack {other.rack} slot {other.slot})",
                                 item, "nodes")
            if at > rack.slots:
                raise self.error(f"node {name} would sit in slot {at}, but rack {rack.id} has {rack.slots} slots",
                                 item, "nodes")
            p = Placement(name, rack.site, rack.room, rack.id, at)
            self.topo.placements[name] = p
            rack.nodes.append(p)

    def rack_nodes(self, rack: Rack, spec: Any, item: Any, start: int = 1) -> None:
        if spec is None:
            return
        entries = spec if isinstance(spec, list) else [spec]
        slot = start
        for entry in entries:
            if isinstance(entry, dict):
                names = self.names(entry.get("name") or entry.get("nodes"), entry)
                height = int(entry.get("height", 1))
                at = int(entry.get("slot", slot))
                self.place(rack, names, at, height, entry)
                slot = at + len(names) * height
            else:
                names = self.names(entry, item)
                self.place(rack, names, slot, 1, item)
                slot += len(names)

    def build(self, data: Any) -> Topology:
        if not isinstance(data, dict) or not isinstance(data.get("sites"), list):
            raise self.error("a topology needs a list 'sites'", data)
        for site in data["sites"]:
            sid = str(site.get("id") or self._missing("site id", site))
            self.topo.sites[sid] = str(site.get("name", sid))
            for room in site.get("rooms") or []:
                rid = str(room.get("id") or self._missing("room id", room))
                if rid in self.topo.rooms:
                    raise self.error(f"room {rid} is declared twice", room)
                r = Room(rid, str(room.get("name", rid)), sid)
                self.topo.rooms[rid] = r
                for rack in room.get("racks") or []:
                    kid = str(rack.get("id") or self._missing("rack id", rack))
                    if kid in self.topo.racks:
                        raise self.error(f"rack {kid} is declared twice", rack)
                    k = Rack(kid, str(rack.get("name", kid)), rid, sid, int(rack.get("slots", 42)))
                    self.topo.racks[kid] = k
                    r.racks.append(k)
                    self.rack_nodes(k, rack.get("nodes"), rack)
        for extra in data.get("placements") or []:
            kid = str(extra.get("rack"))
            if kid not in self.topo.racks:
                raise self.error(f"unknown rack {kid!r} (declared: {', '.join(sorted(self.topo.racks))})", extra,
                                 "rack")
            k = self.topo.racks[kid]
            self.rack_nodes(k, [{"name": extra.get("nodes"), "slot": extra.get("slot", len(k.nodes) + 1),
                                 "height": extra.get("height", 1), "__line__": extra.get("__line__")}], extra)
        for k in self.topo.racks.values():
            k.nodes.sort(key=lambda p: p.slot)
        return self.topo

    def _missing(self, what: str, item: Any) -> str:
        raise self.error(f"{what} is missing", item)


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=source) from exc
    return _Builder(source).build(data)


def load_topology(path: str | Path) -> Topology:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read topology: {exc.strerror}", file=str(p)) from exc
    return parse_topology(text, str(p))


def from_dict(data: dict[str, Any], source: str = "<generated>") -> Topology:
    return _Builder(source).build(data)


def unplaced(names: list[str]) -> Topology:
    """A stand-in when no topology is configured: one room, one rack per partition-less group."""
    rack_size = 42
    racks: list[dict[str, Any]] = []
    for i in range(0, len(names), rack_size):
        chunk = names[i:i + rack_size]
        racks.append({"id": f"u{i // rack_size + 1:02d}", "slots": rack_size,
                      "nodes": [{"name": n, "slot": j + 1} for j, n in enumerate(chunk)]})
    data = {"sites": [{"id": "site", "name": "Unplaced", "rooms": [{"id": "unplaced", "name": "Unplaced nodes",
                                                                   "racks": racks}]}]}
    return from_dict(data, "<unplaced>")
