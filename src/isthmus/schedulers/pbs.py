"""PBS Pro / OpenPBS through ``qstat -f -F json``, ``qstat -Q -f -F json`` and ``pbsnodes -a -F json``.

Partitions are queues. PBS has no notion of Slurm-style associations, so allocations are
not available (an empty list).
"""

from __future__ import annotations

import getpass
import re
from datetime import datetime
from typing import Any

import orjson

from .base import BatchSystem, Job, JobState, Node, NodeState, Partition, run_command
from .slurm import fill_partition_counts, parse_duration

_JOB_STATES = {"Q": JobState.PENDING, "W": JobState.PENDING, "T": JobState.PENDING, "H": JobState.HELD,
               "S": JobState.HELD, "U": JobState.HELD, "R": JobState.RUNNING, "E": JobState.RUNNING,
               "B": JobState.RUNNING, "X": JobState.DONE, "F": JobState.DONE, "M": JobState.UNKNOWN}


def _time(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.strptime(str(value), "%a %b %d %H:%M:%S %Y").timestamp()
    except ValueError:
        return None


def _mem_mb(value: Any) -> int:
    m = re.match(r"^(\d+)\s*([kmgt]?)b?$", str(value or "").strip().lower())
    if not m:
        return 0
    scale = {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024**2}[m.group(2)]
    return int(int(m.group(1)) * scale)


def job_state(code: str, exit_status: Any = None) -> JobState:
    state = _JOB_STATES.get((code or "").strip()[:1], JobState.UNKNOWN)
    if state is JobState.DONE and exit_status is not None:
        code_int = int(exit_status)
        if code_int < 0 or code_int in (271, 265):  # qdel'd: killed by SIGTERM/SIGKILL (256 + signal)
            return JobState.CANCELLED
        if code_int != 0:
            return JobState.FAILED
    return state


def _exec_nodes(exec_host: str | None) -> list[str]:
    nodes: list[str] = []
    for part in (exec_host or "").split("+"):
        name = part.split("/")[0]
        if name and name not in nodes:
            nodes.append(name)
    return nodes


def parse_qstat_json(data: dict[str, Any]) -> list[Job]:
    out = []
    for job_id, j in (data.get("Jobs") or {}).items():
        res = j.get("Resource_List") or {}
        exit_status = j.get("Exit_status")
        state = job_state(j.get("job_state", ""), exit_status)
        out.append(Job(
            job_id=job_id, state=state, name=j.get("Job_Name", ""), user=str(j.get("Job_Owner", "")).split("@")[0],
            account=j.get("Account_Name") or j.get("project"), partition=j.get("queue"),
            nodes=_exec_nodes(j.get("exec_host")), num_nodes=int(res.get("nodect", 0) or 0),
            num_cpus=int(res.get("ncpus", 0) or 0), num_gpus=int(res.get("ngpus", 0) or 0),
            submit_time=_time(j.get("ctime")), start_time=_time(j.get("stime")),
            end_time=_time(j.get("mtime")) if state.final else None,
            time_limit=parse_duration(str(res.get("walltime", ""))),
            exit_code=int(exit_status) if exit_status is not None and state.final else None,
            reason=j.get("comment"),
        ))
    return out


def node_state(state: str, assigned_cpus: int, jobs: list[Any]) -> tuple[NodeState, bool]:
    words = {w.strip() for w in (state or "").split(",")}
    not_responding = "state-unknown" in words or "stale" in words
    if "down" in words:
        return NodeState.down, not_responding
    if "offline" in words:
        return (NodeState.draining if jobs else NodeState.drained), not_responding
    if "maintenance" in words:
        return NodeState.maint, not_responding
    if "resv-exclusive" in words:
        return NodeState.reserved, not_responding
    if words & {"job-busy", "job-exclusive"}:
        return NodeState.allocated, not_responding
    if "free" in words:
        return (NodeState.mixed if assigned_cpus or jobs else NodeState.idle), not_responding
    return NodeState.unknown, not_responding


def parse_pbsnodes_json(data: dict[str, Any]) -> list[Node]:
    out = []
    for name, n in (data.get("nodes") or {}).items():
        avail = n.get("resources_available") or {}
        used = n.get("resources_assigned") or {}
        jobs = n.get("jobs") or []
        cpus_alloc = int(used.get("ncpus", 0) or 0)
        state, not_responding = node_state(n.get("state", ""), cpus_alloc, jobs)
        queue = n.get("queue") or avail.get("queue")
        out.append(Node(
            name=name, state=state, not_responding=not_responding, partitions=[queue] if queue else [],
            cpus=int(avail.get("ncpus", 0) or 0), cpus_alloc=cpus_alloc,
            gpus=int(avail.get("ngpus", 0) or 0), gpus_alloc=int(used.get("ngpus", 0) or 0),
            memory_mb=_mem_mb(avail.get("mem")), memory_alloc_mb=_mem_mb(used.get("mem")),
            reason=n.get("comment") or None,
        ))
    return out


def parse_queues_json(data: dict[str, Any], nodes: list[Node]) -> list[Partition]:
    out = []
    for name, q in (data.get("Queue") or {}).items():
        if q.get("queue_type", "Execution") != "Execution":
            continue
        enabled = str(q.get("enabled", "True")) == "True" and str(q.get("started", "True")) == "True"
        members = [n.name for n in nodes if name in n.partitions] or [n.name for n in nodes if not n.partitions]
        maxima = q.get("resources_max") or {}
        defaults = q.get("resources_default") or {}
        out.append(Partition(
            name=name, state="up" if enabled else "inactive", nodes=members,
            max_time=parse_duration(str(maxima.get("walltime", ""))),
            default_time=parse_duration(str(defaults.get("walltime", ""))),
            max_nodes=int(maxima["nodect"]) if "nodect" in maxima else None,
        ))
    fill_partition_counts(out, nodes)
    return out


class PBSPro(BatchSystem):
    name = "pbs"
    psij_executor = "pbs"

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    async def _json(self, cmd: list[str]) -> dict[str, Any]:
        out = await run_command(cmd, timeout=self.timeout)
        return orjson.loads(out) if out.strip() else {}

    async def nodes(self) -> list[Node]:
        return parse_pbsnodes_json(await self._json(["pbsnodes", "-a", "-F", "json"]))

    async def partitions(self) -> list[Partition]:
        return parse_queues_json(await self._json(["qstat", "-Q", "-f", "-F", "json"]), await self.nodes())

    async def jobs(self, user: str | None = None, partition: str | None = None,
                   include_finished: bool = False) -> list[Job]:
        cmd = ["qstat", "-f", "-F", "json"]
        if include_finished:
            cmd.insert(1, "-x")
        if user:
            cmd += ["-u", user]
        jobs = parse_qstat_json(await self._json(cmd))
        if partition:
            jobs = [j for j in jobs if j.partition == partition]
        if user:
            jobs = [j for j in jobs if j.user == user]
        return jobs

    async def cancel(self, job_id: str) -> None:
        await run_command(["qdel", job_id], timeout=self.timeout)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "user": getpass.getuser(), "allocations": "not available on PBS"}
