"""A pool's state in memory, and its scaling rule (no I/O: tested on its own).

Unfinished tasks are kept as small ``TaskRef`` records (their specs stay in SQLite); a pool's
queue is a deque of task numbers, so 1 M queued tasks cost tens of MB, not gigabytes.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...types import Principal
from .spec import PoolSpec

# A pilot's life: SUBMITTED (batch job queued or starting) → READY (its child edge answers and has a
# tasks session) → RELEASING (cancel asked) → ENDED (the batch job is over).
SUBMITTED, READY, RELEASING, ENDED = "SUBMITTED", "READY", "RELEASING", "ENDED"


@dataclass(slots=True)
class TaskRef:
    n: int
    pool: str
    owner: str
    sid: str
    state: str = "PENDING"
    pilot: str | None = None  # job id of the pilot running it
    remote: str | None = None  # its uid in the pilot's tasks session
    attempts: int = 0  # runs lost to dying pilots


@dataclass
class Pilot:
    job_id: str  # the psij plugin's job id
    pool: str
    state: str = SUBMITTED
    native_id: str | None = None
    edge: str | None = None  # <edge>.<pool>.<native id>, once known
    sid: str | None = None  # the tasks session on the child edge
    reason: str | None = None
    created: float = 0.0
    inflight: dict[str, int] = field(default_factory=dict)  # remote uid → task number
    idle_since: float | None = None
    running_since: float | None = None  # when its batch job started (the connect timeout counts from here)
    vouched: bool = False  # name and token written for the job
    busy: bool = False  # a connect, submit or cancel is under way
    handed: asyncio.Event = field(default_factory=asyncio.Event)  # tasks were handed to it: follow them
    suspect: dict[str, dict[str, Any]] = field(default_factory=dict)  # killed-looking results, not yet believed
    batch_reads: bool = True  # its tasks plugin has get_tasks (False: a child from before it, one get_task each)

    def public(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "native_id": self.native_id, "edge": self.edge, "state": self.state,
                "running": len(self.inflight), "reason": self.reason, "created": self.created}


@dataclass
class Pool:
    spec: PoolSpec
    owner: Principal
    created: float = 0.0
    queue: deque[int] = field(default_factory=deque)  # PENDING task numbers, oldest first
    pilots: dict[str, Pilot] = field(default_factory=dict)  # job id → live pilot
    cancelled: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def running(self) -> int:
        return sum(len(p.inflight) for p in self.pilots.values())

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec.model_dump(), "owner": self.owner.name,
                "state": "CANCELLED" if self.cancelled else "ACTIVE", "queued": len(self.queue),
                "running": self.running(), "created": self.created,
                "pilots": [p.public() for p in self.pilots.values()]}


def wanted_pilots(pool: Pool, per_pilot: int) -> int:
    """How many live pilots the pool should have: enough for its queue and running tasks (each
    pilot takes ``per_pilot`` of them), within min_size..max_size; min_size when idle."""
    spec = pool.spec
    work = len(pool.queue) + pool.running()
    need = math.ceil(work / max(1, per_pilot)) if work else 0
    return max(spec.min_size, min(spec.max_size, need))


def to_release(pool: Pool, now: float, idle_timeout: float) -> list[Pilot]:
    """Pilots (queued or ready) without tasks for ``idle_timeout`` while nothing waits, keeping
    min_size alive; queued ones first (they cost nothing yet, and free the batch queue)."""
    if pool.queue:
        return []
    live = [p for p in pool.pilots.values() if p.state in (SUBMITTED, READY)]
    spare = len(live) - pool.spec.min_size
    idle = [p for p in live if not p.inflight and not p.busy and p.idle_since is not None
            and now - p.idle_since >= idle_timeout]
    idle.sort(key=lambda p: p.state != SUBMITTED)
    return idle[:max(0, spare)]
