"""The cluster plugin's history ring: bounded, columnar, one store per series per sample."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from isthmus import schedulers
from isthmus.plugins.cluster.health import Thresholds
from isthmus.plugins.cluster.history import MAX_SERIES, METRICS, History, sample, select
from isthmus.plugins.cluster.mapping import NodeMapping
from isthmus.plugins.cluster.plugin import PluginCluster
from isthmus.plugins.cluster.topology import from_dict
from isthmus.plugins.cluster.view import ClusterView
from isthmus.plugins.simulator.plugin import PluginSimulator
from isthmus.schedulers.simulated import SimSize, SimulatedCluster


def view_of(sim: SimulatedCluster, when: float | None = None) -> ClusterView:
    async def read() -> ClusterView:
        nodes, jobs, parts = await asyncio.gather(sim.nodes(), sim.jobs(), sim.partitions())
        return ClusterView(nodes, jobs, parts, from_dict(sim.topology()), NodeMapping(), Thresholds(), as_of=when)
    return asyncio.run(read())


@pytest.fixture
def small() -> SimulatedCluster:
    return SimulatedCluster(size=SimSize(rooms=1, racks_per_room=2, cpu_nodes_per_rack=4, gpu_racks_per_room=0))


def test_ring_keeps_the_last_size_samples_in_time_order() -> None:
    ring = History(size=5, interval=10)
    for i in range(12):
        ring.record(1000.0 + 10 * i, {("cluster", "", "util"): float(i)})
    times, util = ring.read([("cluster", "", "util")])
    assert times == [1070.0, 1080.0, 1090.0, 1100.0, 1110.0] and util == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert ring.read([("cluster", "", "util")], since=1090.0) == [[1100.0, 1110.0], [10.0, 11.0]]
    assert ring.read([("cluster", "", "util")], since=2000.0) == [[], []]
    assert ring.catalog()["samples"] == 5 and ring.catalog()["span"] == 40.0


def test_gaps_are_nan_and_a_series_unseen_for_a_whole_ring_is_dropped() -> None:
    ring = History(size=3, interval=1)
    ring.record(1.0, {("node", "a", "load"): 1.0, ("node", "b", "load"): 2.0})
    ring.record(2.0, {("node", "a", "load"): 1.5})  # b left
    _times, a, b = ring.read([("node", "a", "load"), ("node", "b", "load")])
    assert a == [1.0, 1.5] and b[0] == 2.0 and math.isnan(b[1])
    ring.record(3.0, {("node", "a", "load"): 1.0})
    assert ring.targets("node") == {"a", "b"}
    ring.record(4.0, {("node", "a", "load"): 1.0})  # b has had no value for a whole ring: gone
    assert ring.targets("node") == {"a"}
    _, missing = ring.read([("node", "zz", "load")])
    assert len(missing) == 3 and all(math.isnan(v) for v in missing)


def test_due_takes_one_sample_per_interval(small: SimulatedCluster) -> None:
    ring = History(size=10, interval=15)
    assert ring.maybe_record(view_of(small, 100.0))
    assert not ring.maybe_record(view_of(small, 105.0))  # a snapshot rebuilt after a change: no sample
    assert ring.maybe_record(view_of(small, 113.6))  # 10 % slack for timer jitter
    assert ring.count == 2


def test_sample_columns_per_scope(small: SimulatedCluster) -> None:
    small.tick(120)
    small.add_override("c002", "metric", "temperature", 91.0, ttl=600)
    view = view_of(small)
    values = sample(view, clock=small.now)
    node = view.nodes["c002"]
    assert values[("node", "c002", "temperature")] == 91.0
    assert values[("node", "c002", "util")] == pytest.approx(100 * node["cpus_alloc"] / node["cpus"])
    assert values[("room", node["room"], "temperature")] == 91.0  # the room's max
    alloc = sum(n["cpus_alloc"] for n in view.nodes.values())
    assert values[("cluster", "", "util")] == pytest.approx(100 * alloc / sum(n["cpus"] for n in view.nodes.values()))
    pending = [j for j in view.jobs if j.state.value == "PENDING"]
    assert values[("cluster", "", "pending_jobs")] == len(pending)
    if pending:
        assert values[("cluster", "", "wait_max")] == max(small.now - j.submit_time for j in pending)
    cpu = next(p for p in view.partitions_raw if p.name == "cpu")
    assert values[("partition", "cpu", "idle_nodes")] == cpu.idle_nodes
    assert values[("partition", "cpu", "total_cpus")] == cpu.total_cpus
    for key in values:  # every series belongs to a scope its metric declares
        assert key[0] in METRICS[key[2]].scopes, key


def test_select_names_metrics_scopes_and_limits(small: SimulatedCluster) -> None:
    view = view_of(small)
    ring = History(size=4, interval=1)
    assert select(ring, view, "util") == ("cluster", [("cluster", "", "util")])
    scope, keys = select(ring, view, "util,load", node="c001,c002")
    assert scope == "node" and len(keys) == 4
    assert len(select(ring, view, "temperature", node="*")[1]) == len(view.nodes)
    with pytest.raises(LookupError, match="unknown metric nope"):
        select(ring, view, "nope")
    with pytest.raises(LookupError, match="no node 'zz'"):
        select(ring, view, "util", node="zz")
    with pytest.raises(ValueError, match="no partition scope"):
        select(ring, view, "temperature", partition="cpu")
    with pytest.raises(ValueError, match="one of node, partition or room"):
        select(ring, view, "util", node="c001", room="room-a")
    many = ",".join(f"n{i}" for i in range(MAX_SERIES + 1))
    with pytest.raises(ValueError, match="at most 2000"):
        select(ring, view, "util", node=many)


def test_500_nodes_for_an_hour_stays_bounded_and_cheap() -> None:
    """504 simulated nodes, 240 samples (1 h at 15 s), then another hour: memory stops growing."""
    sim = SimulatedCluster()
    view = view_of(sim)
    values = sample(view, clock=sim.now)
    ring = History(size=240, interval=15)
    costs = []
    for i in range(240):
        start = time.perf_counter()
        ring.record(float(i * 15), values)
        costs.append(time.perf_counter() - start)
    full = ring.nbytes()
    for i in range(240, 480):
        ring.record(float(i * 15), values)
    assert ring.nbytes() == full and ring.count == 240
    per_sample_ms = 1000 * sorted(costs)[len(costs) // 2]
    start = time.perf_counter()
    columns = ring.read([("node", n, "temperature") for n in view.nodes])
    read_ms = 1000 * (time.perf_counter() - start)
    print(f"\nhistory: {len(view.nodes)} nodes, {len(ring.series)} series × 240 samples = {full / 1e6:.2f} MB; "
          f"{per_sample_ms:.2f} ms per sample; reading 504 node series {read_ms:.1f} ms")
    assert len(columns) == 505 and all(len(c) == 240 for c in columns)
    assert full < 4 * len(ring.series) * 240 + 1_000_000  # 4 bytes a value, plus under 1 MB of index
    assert per_sample_ms < 20


@pytest.fixture
def sim_app() -> Iterator[tuple[TestClient, PluginSimulator, PluginCluster]]:
    app = FastAPI()
    sim = PluginSimulator(app)
    cluster = PluginCluster(app)
    yield TestClient(app), sim, cluster
    schedulers.use(None)


def test_history_route_answers_columns_for_charts(sim_app) -> None:
    client, _sim, cluster = sim_app
    cluster.history.interval = 1
    catalog = client.get("/cluster/history").json()
    assert {m["id"] for m in catalog["metrics"]} >= {"util", "temperature", "power", "pending_jobs", "wait_max",
                                                     "idle_nodes"}
    assert catalog["samples"] == 1 and catalog["size"] == 240 and catalog["bytes"] > 0
    for _ in range(2):
        time.sleep(1.0)
        client.post("/simulator/tick", json={"seconds": 30})  # a change: the next read builds and samples
        client.get("/cluster/summary")
    answer = client.get("/cluster/history", params={"metric": "temperature,power", "node": "c001"}).json()
    assert [s["label"] for s in answer["series"]] == ["temperature", "power"]
    assert [s["unit"] for s in answer["series"]] == ["°C", "W"]
    times, temps, power = answer["data"]
    assert len(times) == len(temps) == len(power) == 3 and times == sorted(times)
    node = client.get("/cluster/node/c001").json()
    assert temps[-1] == node["metrics"]["temperature"] and node["history"]["temperature"] == temps
    later = client.get("/cluster/history", params={"metric": "util", "since": times[0]}).json()
    assert later["data"][0] == times[1:] and later["series"][0]["label"] == "util"
    parts = client.get("/cluster/history", params={"metric": "pending_jobs", "partition": "*"}).json()
    assert [s["target"] for s in parts["series"]] == ["cpu", "gpu"]
    assert client.get("/cluster/history", params={"metric": "nope"}).status_code == 404
    assert client.get("/cluster/history", params={"metric": "util", "node": "zz"}).status_code == 404
    assert client.get("/cluster/history", params={"metric": "power", "partition": "cpu"}).status_code == 422
    assert client.get("/cluster/history", params={"metric": "util", "since": "yesterday"}).status_code == 422
