"""1,000 simulated edges against a real bridge: the cost of a connect must not grow with the fleet.

The swarm (isthmus.testing.swarm) connects its edges in four waves: 100, 100, 600, 200. The
tests check the shape, not absolute speed (CI has 2 cores and measures coverage):

* the bridge's CPU per connect for the last 200 edges is within 3x of the first 200;
* edges that do not ask for the topology receive (almost) nothing when others connect:
  the first 100 get < 2 KB each while the other 900 connect (pings aside, that is zero);
* /edge/list pages through all of them; a real edge's plugin answers meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from isthmus.testing.stack import Stack
from isthmus.testing.swarm import SwarmProcess, cpu_seconds, list_edges

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOTAL = 1000
EARLY = 100  # the edges whose received bytes are watched while the rest connect
WAVE_TIMEOUT = 45.0
SETTLE = 0.3  # the bridge batches topology changes for 50 ms; let them go out before reading its CPU
BYTES_BOUND = 2048
CPU_RATIO_BOUND = 3.0


@dataclass
class Fleet:
    stack: Stack
    swarm: SwarmProcess
    cpu_first: float | None = None  # bridge CPU seconds per edge, edges 1-200
    cpu_last: float | None = None  # edges 801-1000
    early_bytes: list[int] = field(default_factory=list)  # received by each of the first 100 meanwhile
    failed: str | None = None  # the wave that did not complete, with the swarm's last status

    def wave(self, k: int, total: int) -> bool:
        self.swarm.start_edges(k)
        if self.swarm.wait_connected(total, WAVE_TIMEOUT) is None:
            last = self.swarm.last or {}
            self.failed = (f"only {last.get('connected')} of {total} edges connected within {WAVE_TIMEOUT:g} s; "
                           f"the swarm saw errors {last.get('errors')}, refusals {last.get('refusal_reasons')}, "
                           f"received {last.get('bytes_in', 0) / 1e6:.1f} MB ([frames, bytes] by type: "
                           f"{last.get('by_type')})")
            return False
        time.sleep(SETTLE)
        return True

    def early(self) -> list[int]:
        return [row["bytes"] for row in self.swarm.edges()[:EARLY]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir: Path = tmp_path_factory.mktemp("fleet")
    with Stack(plugins=["sysinfo"], workdir=workdir / "stack") as stack, \
            SwarmProcess(f"ws://127.0.0.1:{stack.port}", TOTAL, stack.edge_token, prefix="sim", initial=0,
                         interval=0.2, log=workdir / "swarm.log") as swarm:
        swarm.wait_ready(120)
        fleet = Fleet(stack, swarm)
        bridge = stack.bridge_pid
        cpu = cpu_seconds(bridge)
        if fleet.wave(EARLY, EARLY):
            start = fleet.early()
            # an early, cheap look at the traffic the next 100 connects cause (fails fast if it grows)
            if fleet.wave(100, 200):
                fleet.cpu_first = (cpu_seconds(bridge) - cpu) / 200
                fleet.early_bytes = [b - a for a, b in zip(start, fleet.early(), strict=True)]
                if max(fleet.early_bytes) < BYTES_BOUND and fleet.wave(600, 800):
                    cpu = cpu_seconds(bridge)
                    if fleet.wave(200, TOTAL):
                        fleet.cpu_last = (cpu_seconds(bridge) - cpu) / 200
                        fleet.early_bytes = [b - a for a, b in zip(start, fleet.early(), strict=True)]
        yield fleet


def test_connect_cost_does_not_grow_with_the_fleet(fleet: Fleet) -> None:
    worst = max(fleet.early_bytes, default=0)
    assert worst < BYTES_BOUND, (
        f"while later edges connected, one of the first {EARLY} (which do not watch the topology) received "
        f"{worst} bytes (mean {sum(fleet.early_bytes) / max(1, len(fleet.early_bytes)):.0f}); each connect "
        f"must not send anything to the edges already connected")
    assert fleet.failed is None, fleet.failed
    assert fleet.cpu_first is not None and fleet.cpu_last is not None
    tick = 0.01  # /proc CPU times count in clock ticks
    ratio = fleet.cpu_last / max(fleet.cpu_first, tick / 200)
    print(f"bridge CPU per connect: {fleet.cpu_first * 1000:.2f} ms (edges 1-200), {fleet.cpu_last * 1000:.2f} ms "
          f"(801-1000); bytes to each of the first {EARLY} meanwhile: max {worst}")
    assert ratio < CPU_RATIO_BOUND, (
        f"bridge CPU per connect grew with the fleet: {fleet.cpu_first * 1000:.2f} ms for edges 1-200, "
        f"{fleet.cpu_last * 1000:.2f} ms for edges 801-1000 ({ratio:.1f}x)")


def test_all_edges_are_listed_page_by_page(fleet: Fleet) -> None:
    assert fleet.failed is None, fleet.failed
    with fleet.stack.http(timeout=60) as client:
        edges, pages, paged = list_edges(client, limit=400)
        first = client.get("/edge/list", params={"limit": 400}).json()
    assert paged, "GET /edge/list does not page (no `next` in its answer)"
    assert len(first["edges"]) <= 400 and first["next"] is not None
    assert first["count"] >= TOTAL + 1 and isinstance(first["version"], int)
    sims = {name for name in edges if name.startswith("sim-")}
    assert sims == {f"sim-{i:05d}" for i in range(TOTAL)}, f"{len(sims)} of {TOTAL} simulated edges listed"
    assert fleet.stack.edge in edges
    assert pages >= 3


def test_a_real_edge_still_answers(fleet: Fleet) -> None:
    if fleet.failed is None:
        assert fleet.swarm.status()["connected"] == TOTAL
    with fleet.stack.http(timeout=30) as client:
        answers = [client.get(f"/{fleet.stack.edge}/sysinfo/version").status_code for _ in range(20)]
    assert answers == [200] * 20
