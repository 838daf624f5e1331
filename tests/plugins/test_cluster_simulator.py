"""The cluster and simulator plugins together, in process and through a real bridge and edge."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from isthmus import schedulers
from isthmus.plugins.cluster.config import ClusterConfig
from isthmus.plugins.cluster.plugin import PluginCluster
from isthmus.plugins.simulator.config import SimulatorConfig
from isthmus.plugins.simulator.plugin import PluginSimulator
from isthmus.testing.stack import Stack, poll_for


@pytest.fixture
def sim_app():
    app = FastAPI()
    sim = PluginSimulator(app)
    cluster = PluginCluster(app)
    client = TestClient(app)
    yield client, sim, cluster
    schedulers.use(None)


def fresh(cluster: PluginCluster) -> None:
    cluster.view = None


def test_default_size_and_deterministic_seed(sim_app) -> None:
    client, sim, _cluster = sim_app
    status = client.get("/simulator/status").json()
    assert status["nodes"] == 504 and status["racks"] == 12 and status["rooms"] == 2
    parts = {p["name"]: p for p in client.get("/cluster/partitions").json()["partitions"]}
    assert parts["gpu"]["total_gpus"] == 24 * 4 and parts["cpu"]["total_nodes"] == 480
    other = PluginSimulator(FastAPI())
    assert other.sim.status()["node_states"] == sim.sim.status()["node_states"]
    sim.sim.tick(30)
    other.sim.tick(30)
    assert other.sim.status()["jobs"] == sim.sim.status()["jobs"]


def test_heavy_mode_gives_crit_and_warn_and_a_crit_rack(sim_app) -> None:
    client, _sim, cluster = sim_app
    assert client.get("/cluster/summary").json()["by_severity"]["CRIT"] == 0
    assert client.post("/simulator/set_incident_mode", json={"mode": "heavy"}).json()["racks"] == 1
    fresh(cluster)
    summary = client.get("/cluster/summary").json()
    assert summary["total"] == 504
    assert summary["by_severity"]["CRIT"] > 0 and summary["by_severity"]["WARN"] > 0
    severities = []
    for room in client.get("/cluster/rooms").json()["rooms"]:
        severities += [r["severity"] for r in client.get(f"/cluster/room/{room['id']}").json()["racks"]]
    assert "CRIT" in severities
    assert client.post("/simulator/set_incident_mode", json={"mode": "bogus"}).status_code == 422


def test_rack_down_then_back_after_ttl(sim_app) -> None:
    client, sim, cluster = sim_app
    inc = client.post("/simulator/incident", json={"type": "rack_down", "target": "r03", "duration": 120}).json()
    assert inc["target"] == "r03"
    fresh(cluster)
    room = client.get("/cluster/room/room-a").json()
    rack = next(r for r in room["racks"] if r["id"] == "r03")
    assert rack["severity"] == "CRIT" and all(n["severity"] == "CRIT" for n in rack["nodes"])
    assert [n["slot"] for n in rack["nodes"]] == sorted(n["slot"] for n in rack["nodes"])
    assert room["severity"] == "CRIT"
    node = client.get(f"/cluster/node/{rack['nodes'][0]['name']}").json()
    assert node["state"] == "down" and "rack down" in node["reason"] and node["rack"] == "r03"
    sim.sim.tick(121)
    fresh(cluster)
    rack = next(r for r in client.get("/cluster/room/room-a").json()["racks"] if r["id"] == "r03")
    assert all(n["severity"] != "CRIT" for n in rack["nodes"])
    assert client.post("/simulator/incident", json={"type": "rack_down", "target": "r99"}).status_code == 422


def test_override_shows_in_node_and_expires(sim_app) -> None:
    client, sim, cluster = sim_app
    ov = client.post("/simulator/overrides", json={"target": "c007", "kind": "metric", "key": "temperature",
                                                   "value": 91.5, "ttl": 60}).json()
    fresh(cluster)
    node = client.get("/cluster/node/c007").json()
    assert node["metrics"]["temperature"] == 91.5 and node["severity"] == "CRIT"
    state = client.post("/simulator/overrides", json={"target": "r02", "kind": "state", "key": "state",
                                                      "value": "maint"}).json()
    fresh(cluster)
    assert all(n["state"] == "maint" for n in client.get("/cluster/nodes", params={"state": "maint"}).json()["nodes"])
    assert len(client.get("/cluster/nodes", params={"state": "maint"}).json()["nodes"]) == 48
    assert {o["id"] for o in client.get("/simulator/overrides").json()["overrides"]} == {ov["id"], state["id"]}
    assert client.delete(f"/simulator/overrides/{state['id']}").status_code == 200
    assert client.delete("/simulator/overrides/nope").status_code == 404
    sim.sim.tick(61)
    fresh(cluster)
    assert client.get("/cluster/node/c007").json()["metrics"]["temperature"] < 90
    assert client.post("/simulator/overrides", json={"target": "c007", "kind": "metric", "key": "humidity",
                                                     "value": 1}).status_code == 422


def test_jobs_on_nodes_filters_and_metrics(sim_app) -> None:
    client, sim, _cluster = sim_app
    nodes = client.get("/cluster/nodes", params={"partition": "gpu"}).json()["nodes"]
    assert len(nodes) == 24 and all("gpu" in n["partitions"] for n in nodes)
    busy = next(n for n in client.get("/cluster/nodes", params={"state": "allocated"}).json()["nodes"])
    detail = client.get(f"/cluster/node/{busy['name']}").json()
    assert detail["jobs"] and all(busy["name"] in j["nodes"] for j in detail["jobs"])
    assert {m["id"] for m in client.get("/cluster/metrics_catalog").json()["metrics"]} >= {
        "running_jobs", "pending_jobs", "allocated_cpus", "allocated_gpus", "allocation_ratio", "node_temperature"}
    running = client.get("/cluster/metric/running_jobs").json()["value"]
    assert running == sim.sim.status()["jobs"]["RUNNING"]
    assert 0 < client.get("/cluster/metric/allocation_ratio", params={"scope": "rack:r01"}).json()["value"] <= 1
    assert client.get("/cluster/metric/nope").status_code == 404
    assert client.get("/cluster/metric/pending_jobs", params={"scope": "node:c001"}).status_code == 400
    assert client.get("/cluster/summary", params={"room": "nope"}).status_code == 404


def test_mapping_get_and_put(sim_app) -> None:
    client, _sim, _cluster = sim_app
    assert client.get("/cluster/mapping").json()["unmatched"] == []
    bad = client.put("/cluster/mapping", json={"patterns": [{"match": "(", "replace": "x"}]})
    assert bad.status_code == 422
    put = client.put("/cluster/mapping", json={"exact": {"c001": "nowhere"}}).json()
    assert put["unmatched"] == ["c001"]


def test_config_contracts() -> None:
    """Each field: one positive, one negative assertion (seed 003's contract-test rule)."""
    assert ClusterConfig().refresh_interval == 5.0
    assert ClusterConfig(topology_file="/x.yaml").topology_file == "/x.yaml"
    assert ClusterConfig().thresholds.temperature_crit == 85.0
    for bad in ({"refresh_interval": 0}, {"history": 0}, {"thresholds": {"temp": 1}}, {"topology": "x"}):
        with pytest.raises(ValidationError):
            ClusterConfig.model_validate(bad)
    cfg = SimulatorConfig()
    assert (cfg.seed, cfg.rooms, cfg.racks_per_room, cfg.mode, cfg.speed) == (42, 2, 6, "full_ok", 1.0)
    for bad in ({"rooms": 0}, {"tick_interval": 0}, {"speed": -1}, {"size": 5}):
        with pytest.raises(ValidationError):
            SimulatorConfig.model_validate(bad)


def test_response_shapes(sim_app) -> None:
    client, _sim, _cluster = sim_app
    summary = client.get("/cluster/summary").json()
    assert set(summary) == {"total", "by_state", "by_severity", "unplaced"}
    assert set(summary["by_severity"]) == {"OK", "WARN", "CRIT", "UNKNOWN"}
    room = client.get("/cluster/rooms").json()["rooms"][0]
    assert set(room) == {"id", "name", "site", "severity"}
    rack = client.get(f"/cluster/room/{room['id']}").json()["racks"][0]
    assert {"id", "severity", "nodes"} <= set(rack) and set(rack["nodes"][0]) == {"name", "slot", "state", "severity"}
    node = client.get("/cluster/nodes").json()["nodes"][0]
    assert {"state", "severity", "partitions", "jobs", "reason", "site", "room", "rack", "slot"} <= set(node)


def test_demo_like_edge_through_the_bridge() -> None:
    config = {"scheduler": "simulated", "plugins": {"simulator": {"enabled": True},
                                                    "psij": {"enabled": False}, "tasks": {"enabled": False},
                                                    "staging": {"enabled": False}}}
    with Stack(plugins=None, config=config) as s:
        edge = s.client().get_edge_client("test")
        cluster = edge.get_plugin("cluster", register=False)
        sim = edge.get_plugin("simulator", register=False)
        qi = edge.get_plugin("queue_info")
        assert qi.backend() == "simulated"
        assert cluster.summary()["total"] == 504
        events: list = []
        s.client().register_callback(plugin_name="cluster", topic="cluster",
                                     callback=lambda e, p, t, d: events.append(d))
        sim.incident("rack_down", "r05", 60)
        poll_for(lambda: any(e["kind"] == "rack" and e["name"] == "r05" and e["severity"] == "CRIT"
                             for e in events), 20, what="a cluster event for the rack")
        assert any(r["severity"] == "CRIT" for r in cluster.rooms())
