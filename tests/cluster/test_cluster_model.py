"""Topology parsing, node mapping and the one severity order."""

from __future__ import annotations

import pytest

from isthmus.errors import ConfigError
from isthmus.plugins.cluster.health import Severity, Thresholds, counts, node_severity, worst
from isthmus.plugins.cluster.mapping import NodeMapping
from isthmus.plugins.cluster.topology import parse_topology
from isthmus.schedulers.base import Node, NodeState

TOPOLOGY = """\
sites:
  - id: main
    name: Main DC
    rooms:
      - id: room-a
        name: Room A
        racks:
          - id: r01
            slots: 42
            nodes: "c[001-040]"
          - id: r02
            slots: 42
            nodes:
              - {name: "gpu[01-04]", slot: 1, height: 2}
      - id: room-b
        racks:
          - id: r03
            nodes: "c[041-050]"
placements:
  - {rack: r01, nodes: "c[051-052]", slot: 41}
"""


def test_topology_places_nodes_in_slots() -> None:
    topo = parse_topology(TOPOLOGY, "topo.yaml")
    assert set(topo.rooms) == {"room-a", "room-b"} and topo.sites == {"main": "Main DC"}
    assert topo.locate("c001").slot == 1 and topo.locate("c040").slot == 40
    assert [p.slot for p in topo.racks["r02"].nodes] == [1, 3, 5, 7]
    assert topo.locate("gpu04").rack == "r02" and topo.locate("gpu04").room == "room-a"
    assert topo.locate("c052").slot == 42 and topo.locate("c045").room == "room-b"
    assert topo.rooms["room-b"].name == "room-b"


@pytest.mark.parametrize(("text", "message", "line"), [
    (TOPOLOGY.replace('nodes: "c[041-050]"', 'nodes: "c[035-050]"'), "placed twice", 18),
    (TOPOLOGY.replace("{rack: r01,", "{rack: r99,"), "unknown rack 'r99'", 20),
    (TOPOLOGY.replace('nodes: "c[001-040]"', 'nodes: "c[001-0x40]"'), "malformed node range", 10),
    (TOPOLOGY.replace('nodes: "c[001-040]"', 'nodes: "c[001-043]"'), "has 42 slots", 10),
    ("sites: [\n  {id: s, rooms: [{id: a}, {id: a}]}]\n", "declared twice", 2),
    ("sites: {not: a list}\n", "needs a list", 1),
    ("sites: [\n  - broken\n", "not valid YAML", None),
])
def test_topology_errors_name_the_line(text: str, message: str, line: int | None) -> None:
    with pytest.raises(ConfigError) as err:
        parse_topology(text, "topo.yaml")
    assert message in str(err.value)
    assert "topo.yaml" in str(err.value)
    if line is not None:
        assert f"line {line}" in str(err.value)


def test_mapping_exact_patterns_and_unmatched() -> None:
    mapping = NodeMapping.model_validate({"exact": {"login1": "c001"},
                                          "patterns": [{"match": r"^nid0*(\d+)$", "replace": r"c\1"}]})
    mapped, unmatched = mapping.apply(["login1", "nid00042", "nid00999", "mystery"], {"c001", "c42"})
    assert mapped == {"login1": "c001", "nid00042": "c42", "nid00999": "c999", "mystery": "mystery"}
    assert unmatched == ["nid00999", "mystery"]
    with pytest.raises(ValueError, match="regular expression"):
        NodeMapping.model_validate({"patterns": [{"match": "(", "replace": "x"}]})
    with pytest.raises(ValueError):
        NodeMapping.model_validate({"exakt": {}})


def node(state: NodeState, not_responding: bool = False, **metrics: float) -> Node:
    return Node("n", state, not_responding=not_responding, metrics=metrics)


def test_one_severity_order_and_node_health() -> None:
    assert Severity.OK < Severity.UNKNOWN < Severity.WARN < Severity.CRIT
    assert node_severity(node(NodeState.idle)) is Severity.OK
    assert node_severity(node(NodeState.allocated)) is Severity.OK
    assert node_severity(node(NodeState.draining)) is Severity.WARN
    assert node_severity(node(NodeState.drained)) is Severity.WARN
    assert node_severity(node(NodeState.maint)) is Severity.WARN
    assert node_severity(node(NodeState.down)) is Severity.CRIT
    assert node_severity(node(NodeState.idle, not_responding=True)) is Severity.CRIT
    assert node_severity(node(NodeState.unknown)) is Severity.UNKNOWN
    assert node_severity(node(NodeState.idle, temperature=80)) is Severity.WARN
    assert node_severity(node(NodeState.idle, temperature=90)) is Severity.CRIT
    assert node_severity(node(NodeState.idle, power=900), Thresholds(power_warn=800)) is Severity.WARN


def test_roll_up_worst_wins_unknown_never_hidden() -> None:
    assert worst([Severity.OK, Severity.UNKNOWN]) is Severity.UNKNOWN
    assert worst([Severity.UNKNOWN, Severity.WARN]) is Severity.WARN
    assert worst([Severity.OK, Severity.CRIT, Severity.WARN]) is Severity.CRIT
    assert worst([]) is Severity.OK
    assert counts([Severity.UNKNOWN, Severity.WARN, Severity.WARN]) == {"OK": 0, "UNKNOWN": 1, "WARN": 2, "CRIT": 0}
