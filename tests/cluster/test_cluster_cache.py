"""The cluster plugin's snapshot cache: keyed by the scheduler's generation, never older than a change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from isthmus import schedulers
from isthmus.plugins.cluster.plugin import NodeControl, PluginCluster
from isthmus.schedulers.base import Node
from isthmus.schedulers.none import NoScheduler
from isthmus.schedulers.simulated import SimSize, SimulatedCluster


class SlowCluster(SimulatedCluster):
    """A small simulated cluster whose node listing can be held back after it has read its data."""

    def __init__(self) -> None:
        super().__init__(size=SimSize(rooms=1, racks_per_room=1, cpu_nodes_per_rack=4, gpu_racks_per_room=0),
                         workload=False)
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()
        self.listings = 0

    async def nodes(self) -> list[Node]:
        self.listings += 1
        gate = self.gate
        nodes = await super().nodes()  # read now: stale if something changes while we wait
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        return nodes


@pytest.fixture
def slow() -> Iterator[SlowCluster]:
    sim = SlowCluster()
    schedulers.use(sim)
    yield sim
    schedulers.use(None)


def test_generation_counts_changes_made_through_the_backend() -> None:
    sim = SimulatedCluster(size=SimSize(rooms=1, racks_per_room=2, cpu_nodes_per_rack=4, gpu_racks_per_room=0),
                           workload=False)
    start = sim.generation
    sim.tick(5)
    assert sim.generation == start  # time passing is not a change made through Isthmus
    sim.incident("node_down", "c001", duration=10)
    sim.set_incident_mode("light")
    ov = sim.add_override("c002", "metric", "temperature", 90.0, ttl=10)
    assert sim.generation == start + 3
    assert sim.delete_override(ov.id) and not sim.delete_override(ov.id)
    assert sim.clear_overrides() == 0
    assert sim.generation == start + 4  # a no-op is no change
    sim.add_override("c002", "metric", "temperature", 90.0, ttl=10)
    sim.tick(11)  # the incident and the override run out: a change
    assert sim.generation == start + 6
    assert not sim.incidents and not sim.overrides
    assert isinstance(sim, NodeControl) and not isinstance(NoScheduler(), NodeControl)


@pytest.mark.asyncio
async def test_reads_share_one_snapshot_until_the_generation_moves(slow: SlowCluster) -> None:
    plugin = PluginCluster(FastAPI())
    first = await plugin.current()
    assert await plugin.current() is first and slow.listings == 2  # nodes() + partitions()
    await slow.drain("c001", "bad fan")
    after = await plugin.current()
    assert after is not first and after.nodes["c001"]["state"] == "drained"
    assert after.nodes["c001"]["reason"] == "bad fan" and after.time > first.time
    assert await plugin.current() is after
    plugin.invalidate()  # this plugin's own inputs (mapping, config) count too
    assert await plugin.current() is not after


@pytest.mark.asyncio
async def test_a_snapshot_built_before_a_change_never_answers_after_it(slow: SlowCluster) -> None:
    plugin = PluginCluster(FastAPI())
    first = await plugin.current()
    gate = slow.gate = asyncio.Event()
    refresh = asyncio.create_task(plugin.current(force=True))  # the background refresh reads the scheduler...
    await asyncio.wait_for(slow.waiting.wait(), 5)
    slow.gate = None
    await slow.drain("c002", "memory errors")  # ...and a drain lands while it is on its way
    after = await plugin.current()  # must not join the refresh that started before the drain
    assert after.nodes["c002"]["state"] == "drained"
    gate.set()
    old = await asyncio.wait_for(refresh, 5)
    assert old.nodes["c002"]["state"] == "idle"  # its caller gets what it read, as of when it read it
    assert old.time < after.time and old.time > first.time
    assert plugin.view is after and await plugin.current() is after  # but it never replaces the newer one


@pytest.mark.asyncio
async def test_another_scheduler_object_is_another_snapshot(slow: SlowCluster) -> None:
    plugin = PluginCluster(FastAPI())
    first = await plugin.current()
    other = SlowCluster()
    other.generation = slow.generation  # same count, different object
    schedulers.use(other)
    assert await plugin.current() is not first
