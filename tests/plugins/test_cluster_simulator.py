"""The cluster and simulator plugins together, in process and through a real bridge and edge.

No test here clears the cluster plugin's snapshot by hand: every change made through Isthmus
(incident, mode, override, drain, tick, restart) must show in the very next read.
"""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from isthmus import schedulers
from isthmus.errors import ClientError
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
    client, _sim, _cluster = sim_app
    assert client.get("/cluster/summary").json()["by_severity"]["CRIT"] == 0
    assert client.post("/simulator/set_incident_mode", json={"mode": "heavy"}).json()["racks"] == 1
    summary = client.get("/cluster/summary").json()
    assert summary["total"] == 504
    assert summary["by_severity"]["CRIT"] > 0 and summary["by_severity"]["WARN"] > 0
    severities = []
    for room in client.get("/cluster/rooms").json()["rooms"]:
        severities += [r["severity"] for r in client.get(f"/cluster/room/{room['id']}").json()["racks"]]
    assert "CRIT" in severities
    assert client.post("/simulator/set_incident_mode", json={"mode": "bogus"}).status_code == 422


def test_rack_down_then_back_after_ttl(sim_app) -> None:
    client, sim, _cluster = sim_app
    inc = client.post("/simulator/incident", json={"type": "rack_down", "target": "r03", "duration": 120}).json()
    assert inc["target"] == "r03"
    room = client.get("/cluster/room/room-a").json()
    rack = next(r for r in room["racks"] if r["id"] == "r03")
    assert rack["severity"] == "CRIT" and all(n["severity"] == "CRIT" for n in rack["nodes"])
    assert [n["slot"] for n in rack["nodes"]] == sorted(n["slot"] for n in rack["nodes"])
    assert room["severity"] == "CRIT"
    node = client.get(f"/cluster/node/{rack['nodes'][0]['name']}").json()
    assert node["state"] == "down" and "rack down" in node["reason"] and node["rack"] == "r03"
    sim.sim.tick(121)  # the incident runs out: that is a change too
    rack = next(r for r in client.get("/cluster/room/room-a").json()["racks"] if r["id"] == "r03")
    assert all(n["severity"] != "CRIT" for n in rack["nodes"])
    assert client.post("/simulator/incident", json={"type": "rack_down", "target": "r99"}).status_code == 422


def test_override_shows_in_node_and_expires(sim_app) -> None:
    client, sim, _cluster = sim_app
    ov = client.post("/simulator/overrides", json={"target": "c007", "kind": "metric", "key": "temperature",
                                                   "value": 91.5, "ttl": 60}).json()
    node = client.get("/cluster/node/c007").json()
    assert node["metrics"]["temperature"] == 91.5 and node["severity"] == "CRIT"
    state = client.post("/simulator/overrides", json={"target": "r02", "kind": "state", "key": "state",
                                                      "value": "maint"}).json()
    assert all(n["state"] == "maint" for n in client.get("/cluster/nodes", params={"state": "maint"}).json()["nodes"])
    assert len(client.get("/cluster/nodes", params={"state": "maint"}).json()["nodes"]) == 48
    assert {o["id"] for o in client.get("/simulator/overrides").json()["overrides"]} == {ov["id"], state["id"]}
    assert client.delete(f"/simulator/overrides/{state['id']}").status_code == 200
    assert client.delete("/simulator/overrides/nope").status_code == 404
    sim.sim.tick(61)
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
    assert set(summary) == {"total", "by_state", "by_severity", "unplaced", "as_of", "age"}
    assert set(summary["by_severity"]) == {"OK", "WARN", "CRIT", "UNKNOWN"}
    room = client.get("/cluster/rooms").json()["rooms"][0]
    assert set(room) == {"id", "name", "site", "severity"}
    rack = client.get(f"/cluster/room/{room['id']}").json()["racks"][0]
    assert {"id", "severity", "nodes"} <= set(rack) and set(rack["nodes"][0]) == {"name", "slot", "state", "severity"}
    node = client.get("/cluster/nodes").json()["nodes"][0]
    assert {"state", "severity", "partitions", "jobs", "reason", "site", "room", "rack", "slot"} <= set(node)


def simulated_config(**cluster: object) -> dict[str, object]:
    """An edge like the demo's: the simulator on, the job plugins off."""
    plugins: dict[str, object] = {"simulator": {"enabled": True}, "psij": {"enabled": False},
                                  "tasks": {"enabled": False}, "staging": {"enabled": False}}
    if cluster:
        plugins["cluster"] = cluster
    return {"scheduler": "simulated", "plugins": plugins}


def test_demo_like_edge_through_the_bridge() -> None:
    with Stack(plugins=None, config=simulated_config()) as s:
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


def test_one_snapshot_until_a_change_then_the_next_read_shows_it(sim_app) -> None:
    client, sim, _cluster = sim_app
    first = client.get("/cluster/summary").json()
    assert first["as_of"] <= time.time() and first["age"] >= 0
    sim.sim.tick(1)  # the workload moving on by itself is no change made through Isthmus: same snapshot
    again = client.get("/cluster/summary").json()
    assert again["as_of"] == first["as_of"] and again["age"] >= first["age"]
    for path in ("partitions", "nodes", "rooms", "node/c001", "room/room-a", "metric/running_jobs", "mapping"):
        assert client.get(f"/cluster/{path}").json()["as_of"] == first["as_of"], path
    time.sleep(0.01)
    client.post("/simulator/incident", json={"type": "node_down", "target": "c001", "duration": 60})
    after = client.get("/cluster/summary").json()
    assert after["by_severity"]["CRIT"] == first["by_severity"]["CRIT"] + 1 and after["as_of"] > first["as_of"]
    time.sleep(0.01)
    client.post("/simulator/tick", json={"seconds": 61})  # a tick asked for through Isthmus is a change
    ticked = client.get("/cluster/summary").json()
    assert ticked["as_of"] > after["as_of"] and ticked["by_severity"]["CRIT"] == first["by_severity"]["CRIT"]
    time.sleep(0.01)
    client.post("/simulator/restart", json={})
    assert client.get("/cluster/summary").json()["as_of"] > ticked["as_of"]


def test_drain_and_resume_through_the_cluster_plugin(sim_app) -> None:
    client, sim, _cluster = sim_app
    before = client.get("/cluster/node/c010").json()
    assert before["severity"] == "OK" and before["reason"] is None
    time.sleep(0.01)
    drained = client.post("/cluster/node/c010/drain", json={"reason": "fan failure (test)"}).json()
    busy = bool(before["jobs"])
    assert drained["state"] == ("draining" if busy else "drained") and drained["reason"] == "fan failure (test)"
    assert drained["as_of"] > before["as_of"]
    node = client.get("/cluster/node/c010").json()
    assert node["state"] == drained["state"] and node["severity"] == "WARN" and node["as_of"] == drained["as_of"]
    assert client.get("/cluster/summary").json()["by_severity"]["WARN"] == 1
    assert sim.sim.status()["drains"] == 1
    sim.sim.tick(30)  # new jobs start, never on the drained node
    assert not [j for j in sim.sim.job_map.values() if j.start_time == sim.sim.now and "c010" in j.nodes]
    resumed = client.post("/cluster/node/c010/resume").json()
    assert resumed["severity"] == "OK" and resumed["reason"] is None and resumed["state"] != "drained"
    assert client.get("/cluster/node/c010").json()["as_of"] == resumed["as_of"]
    assert client.post("/cluster/node/nope/drain", json={"reason": "x"}).status_code == 404
    for bad in ({}, {"reason": " "}, {"reason": "two\nlines"}, {"reason": "x" * 201}, ["fan"]):
        assert client.post("/cluster/node/c010/drain", json=bad).status_code == 422, bad
    assert client.get("/cluster/node/c010").json()["reason"] is None


def test_changes_through_isthmus_show_in_the_next_read_through_the_bridge() -> None:
    """The lag: with a snapshot kept a minute, a change made through Isthmus still shows at once."""
    with Stack(plugins=None, config=simulated_config(refresh_interval=60)) as s:
        edge = s.client().get_edge_client("test")
        cluster = edge.get_plugin("cluster", register=False)
        sim = edge.get_plugin("simulator", register=False)
        first = cluster.summary()
        assert first["by_severity"]["CRIT"] == 0 and first["total"] == 504
        again = cluster.summary()
        assert again["as_of"] == first["as_of"] and again["age"] >= first["age"]  # one snapshot, ageing
        sim.incident("rack_down", "r05", 600)
        after = cluster.summary()  # no waiting, no polling
        assert after["by_severity"]["CRIT"] == 48, after
        assert after["as_of"] > first["as_of"]
        assert cluster.node("c200")["state"] == "down"  # c193..c240 are rack r05
        sim.add_override("c020", "state", "maint", kind="state")
        assert cluster.node("c020")["state"] == "maint"
        drained = cluster.drain("c010", "fan failure (test)")
        assert drained["state"] in ("drained", "draining") and drained["reason"] == "fan failure (test)"
        node = cluster.node("c010")
        assert node["state"] == drained["state"] and node["reason"] == "fan failure (test)"
        assert node["severity"] == "WARN"
        assert cluster.resume("c010")["reason"] is None and cluster.node("c010")["severity"] == "OK"
        sim.set_incident_mode("heavy")
        assert cluster.summary()["by_severity"]["WARN"] > 1
        viewer = s.create_token("user")
        other = s.client(viewer).get_edge_client("test").get_plugin("cluster", register=False)
        with pytest.raises(ClientError) as err:
            other.drain("c011", "not mine to drain")
        assert err.value.status_code == 403
        assert cluster.node("c011")["reason"] != "not mine to drain"
