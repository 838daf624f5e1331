"""The scheduler layer's shared shape: normalized states, records, and the one CLI runner.

Callers never see raw scheduler strings: every backend maps its own job and node states
onto ``JobState`` (the project's one job vocabulary, ``isthmus.jobstates``) and ``NodeState``
here, and every CLI failure becomes a
``SchedulerError`` in ``run_command``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import Metric

from ..errors import SchedulerError, SchedulerTimeout, SchedulerUnavailable
from ..jobstates import JobState as JobState  # the one vocabulary; re-exported here

DEFAULT_TIMEOUT = 30.0

# Every scheduler CLI call, by command (squeue, sinfo, qstat, ...: chosen by code, never by a
# caller, so the label stays small). The scheduler is one per process, so is this histogram;
# each plugin host's /_edge/metrics shows it (``query_metrics``).
_QUERY_SECONDS = Histogram("isthmus_edge_scheduler_query_seconds", "Scheduler CLI calls, by command.",
                           ["query"], registry=None,
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))


def query_metrics() -> Iterable[Metric]:
    """The scheduler query latency histogram, for a metrics registry's collector."""
    return _QUERY_SECONDS.collect()


class NodeState(StrEnum):
    idle = "idle"
    allocated = "allocated"
    mixed = "mixed"
    draining = "draining"
    drained = "drained"
    down = "down"
    reserved = "reserved"
    maint = "maint"
    unknown = "unknown"


@dataclass
class Node:
    name: str
    state: NodeState
    not_responding: bool = False
    partitions: list[str] = field(default_factory=list)
    cpus: int = 0
    cpus_alloc: int = 0
    gpus: int = 0
    gpus_alloc: int = 0
    memory_mb: int = 0
    memory_alloc_mb: int = 0
    reason: str | None = None  # why drained/down, as the operator wrote it
    features: list[str] = field(default_factory=list)
    load: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # temperature, power, ... when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Partition:
    name: str
    state: str = "up"  # up | down | drain | inactive
    default: bool = False
    nodes: list[str] = field(default_factory=list)
    total_nodes: int = 0
    idle_nodes: int = 0
    total_cpus: int = 0
    idle_cpus: int = 0
    total_gpus: int = 0
    idle_gpus: int = 0
    max_time: int | None = None  # seconds; None = unlimited
    max_nodes: int | None = None
    default_time: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Job:
    job_id: str
    state: JobState
    name: str = ""
    user: str = ""
    account: str | None = None
    partition: str | None = None
    nodes: list[str] = field(default_factory=list)
    num_nodes: int = 0
    num_cpus: int = 0
    num_gpus: int = 0
    submit_time: float | None = None  # unix seconds
    start_time: float | None = None
    end_time: float | None = None
    time_limit: int | None = None  # seconds
    exit_code: int | None = None
    reason: str | None = None  # why pending / how it ended

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Allocation:
    """An account/association the user may charge, with its limits (slurmdbd)."""

    account: str
    user: str | None = None
    partition: str | None = None
    qos: list[str] = field(default_factory=list)
    default_qos: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BatchSystem(ABC):
    """One scheduler. Every method is async and never blocks the event loop."""

    name: str = "none"
    #: the PSI/J executor name for job submission through this scheduler
    psij_executor: str = "local"
    #: Bumped by ``changed()`` after every change made through this object (a drain, a
    #: simulator incident, ...). A cache of what the scheduler reports keeps the value it was
    #: built at and compares: O(1) per read, and stale the moment anything changed here.
    #: Changes made outside Isthmus (``scontrol`` by hand) are not counted: caches age out.
    generation: int = 0

    def changed(self) -> None:
        """Record a change made through this object: caches built before it are stale."""
        self.generation += 1

    @abstractmethod
    async def partitions(self) -> list[Partition]: ...

    @abstractmethod
    async def nodes(self) -> list[Node]: ...

    @abstractmethod
    async def jobs(self, user: str | None = None, partition: str | None = None,
                   include_finished: bool = False) -> list[Job]: ...

    async def job(self, job_id: str) -> Job | None:
        for job in await self.jobs(include_finished=True):
            if job.job_id == job_id:
                return job
        return None

    async def allocations(self, user: str | None = None) -> list[Allocation]:
        return []

    @abstractmethod
    async def cancel(self, job_id: str) -> None: ...

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "psij_executor": self.psij_executor}


def which(command: str) -> str | None:
    return shutil.which(command)


async def run_command(cmd: list[str], *, timeout: float = DEFAULT_TIMEOUT,
                      env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run a scheduler CLI off the event loop; the one place its failures are translated:
    not installed or not executable → ``SchedulerUnavailable`` (503), no answer within
    ``timeout`` → ``SchedulerTimeout`` (504), a non-zero exit → ``SchedulerError`` (502)."""
    if which(cmd[0]) is None:
        raise SchedulerUnavailable(f"{cmd[0]} not found on PATH; is the scheduler's client installed?",
                                   command=cmd)
    full_env = {**os.environ, **(env or {})}
    started = time.monotonic()
    try:
        return await _run(cmd, full_env, timeout, check)
    finally:
        _QUERY_SECONDS.labels(os.path.basename(cmd[0])).observe(time.monotonic() - started)


async def _run(cmd: list[str], full_env: dict[str, str], timeout: float, check: bool) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, env=full_env)
    except OSError as exc:
        raise SchedulerUnavailable(f"cannot run {cmd[0]}: {exc}", command=cmd) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise SchedulerTimeout(f"{' '.join(cmd)} did not answer within {timeout:g} s",
                               command=cmd) from exc
    stderr = err.decode(errors="replace").strip()
    if check and proc.returncode != 0:
        raise SchedulerError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {stderr or 'no stderr'}",
                             command=cmd, stderr=stderr, returncode=proc.returncode)
    return out.decode(errors="replace")
