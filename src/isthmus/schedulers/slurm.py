"""Slurm through its command-line tools, both JSON generations.

* 22.05 (openapi v0.0.38 plugins): ``sinfo --json`` lists nodes (state string plus
  ``state_flags``), ``squeue --json`` / ``sacct --json`` list jobs with plain values;
  partitions come from ``scontrol show partition -o`` (no JSON there).
* 23.02 and later (data_parser): states are lists (``["IDLE", "DRAIN"]``), numbers are
  ``{"set", "infinite", "number"}`` objects; ``scontrol show node|partition --json`` exist.
* Associations always come from ``sacctmgr -P -n`` text, which every version prints alike.

The parsers are pure functions of the command's output so they are tested on recorded
outputs; ``Slurm`` only runs the commands (through ``run_command``) and picks parsers.
"""

from __future__ import annotations

import getpass
import re
import time
from typing import Any

import orjson

from .base import Allocation, BatchSystem, Job, JobState, Node, NodeState, Partition, run_command
from .hostlist import expand

# -- value helpers (both generations) ---------------------------------------------------------


def number(value: Any) -> int | None:
    """A plain number, or a data_parser ``{"set", "infinite", "number"}`` object."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def flags(value: Any) -> list[str]:
    """State as a list of upper-case words: "idle" / ["IDLE","DRAIN"] / "MIXED+DRAIN*"."""
    if isinstance(value, list):
        words = [str(v) for v in value]
    else:
        words = re.split(r"[+,]", str(value or ""))
    return [w.strip().upper() for w in words if w.strip()]


def seconds_from_minutes(value: Any) -> int | None:
    minutes = number(value)
    return minutes * 60 if minutes is not None else None


def parse_duration(text: str) -> int | None:
    """Slurm/PBS durations: ``UNLIMITED``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    text = (text or "").strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.append(0)
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            parts = [0, parts[0], 0]
        elif len(parts) == 2:
            parts = [0, *parts]
    h, m, s = parts[:3]
    return days * 86400 + h * 3600 + m * 60 + s


# -- state normalization ----------------------------------------------------------------------

_JOB_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING, "REQUEUE_HOLD": JobState.HELD, "RESV_DEL_HOLD": JobState.HELD,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING, "RESIZING": JobState.RUNNING, "SUSPENDED": JobState.HELD,
    "STOPPED": JobState.HELD, "COMPLETED": JobState.DONE, "CANCELLED": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED, "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED, "NODE_FAIL": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED, "OUT_OF_MEMORY": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
}
_HELD_REASONS = ("JobHeldUser", "JobHeldAdmin", "held")


def job_state(state: Any, reason: str | None = None) -> JobState:
    words = flags(state)
    base = words[0].split(" ")[0] if words else ""
    normalized = _JOB_STATES.get(base, JobState.UNKNOWN)
    if normalized is JobState.PENDING and reason and any(r in reason for r in _HELD_REASONS):
        return JobState.HELD
    return normalized


_BASE_NODE = {"IDLE": NodeState.idle, "ALLOCATED": NodeState.allocated, "ALLOC": NodeState.allocated,
              "MIXED": NodeState.mixed, "DOWN": NodeState.down, "RESERVED": NodeState.reserved,
              "FUTURE": NodeState.unknown, "UNKNOWN": NodeState.unknown, "DRAINED": NodeState.drained,
              "DRAINING": NodeState.draining, "ERROR": NodeState.down, "FAIL": NodeState.down,
              "COMPLETING": NodeState.allocated, "PLANNED": NodeState.idle}


def node_state(state: Any, extra_flags: Any = None) -> tuple[NodeState, bool]:
    """(normalized state, not responding) from a Slurm node state and its flags."""
    words = flags(state) + flags(extra_flags)
    not_responding = any(w.endswith("*") for w in words) or "NOT_RESPONDING" in words
    words = [w.rstrip("*~#!%$@^-") for w in words]
    base = _BASE_NODE.get(words[0], NodeState.unknown) if words else NodeState.unknown
    rest = set(words[1:])
    if "MAINTENANCE" in rest or "MAINT" in rest:
        return NodeState.maint, not_responding
    if base is NodeState.down or "DOWN" in rest:
        return NodeState.down, not_responding
    if "DRAIN" in rest or "DRAINING" in rest or "DRAINED" in rest:
        busy = base in (NodeState.allocated, NodeState.mixed) or "COMPLETING" in rest
        return (NodeState.draining if busy else NodeState.drained), not_responding
    if "RESERVED" in rest and base is NodeState.idle:
        return NodeState.reserved, not_responding
    return base, not_responding


# -- parsers ------------------------------------------------------------------------------------


def _gpus(gres: Any) -> int:
    """GPUs in a gres/TRES string: ``gpu:a100:4(S:0-1)``, ``gres/gpu:2``, ``gres/gpu=2``."""
    total = 0
    for part in str(gres or "").split(","):
        m = re.match(r"(?:gres/)?gpu(?::[^:(=]+)?[:=](\d+)", part.strip())
        if m:
            total += int(m.group(1))
    return total


def parse_nodes_json(data: dict[str, Any]) -> list[Node]:
    """``sinfo --json`` (22.05: a ``nodes`` list) or ``scontrol show node --json`` (23.02+)."""
    out = []
    for n in data.get("nodes", []):
        state, not_responding = node_state(n.get("state"), n.get("state_flags"))
        load = number(n.get("cpu_load"))
        reason = n.get("reason")
        if isinstance(reason, dict):
            reason = reason.get("description")
        features = n.get("features") or n.get("active_features") or ""
        if isinstance(features, list):
            features = ",".join(features)
        out.append(Node(
            name=n["name"], state=state, not_responding=not_responding,
            partitions=list(n.get("partitions") or []),
            cpus=number(n.get("cpus")) or 0, cpus_alloc=number(n.get("alloc_cpus")) or 0,
            gpus=_gpus(n.get("gres")), gpus_alloc=_gpus(n.get("gres_used")),
            memory_mb=number(n.get("real_memory")) or 0, memory_alloc_mb=number(n.get("alloc_memory")) or 0,
            reason=reason or None, features=[f for f in str(features).split(",") if f],
            load=load / 100 if load is not None else None,
        ))
    return out


def _kv(line: str) -> dict[str, str]:
    """``Key=Value Key2=Value two`` as printed by ``scontrol -o`` (values may contain spaces)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"(\w+)=(.*?)(?=\s+\w+=|$)", line.strip()):
        out[m.group(1)] = m.group(2).strip()
    return out


def parse_nodes_text(text: str) -> list[Node]:
    """``scontrol show node -o``."""
    out = []
    for line in text.splitlines():
        if not line.startswith("NodeName="):
            continue
        kv = _kv(line)
        state, not_responding = node_state(kv.get("State", ""))
        reason = kv.get("Reason")
        if reason:
            reason = re.sub(r"\s*\[[^\]]*\]$", "", reason)
        load = kv.get("CPULoad", "N/A")
        out.append(Node(
            name=kv["NodeName"], state=state, not_responding=not_responding,
            partitions=[p for p in kv.get("Partitions", "").split(",") if p],
            cpus=int(kv.get("CPUTot", 0) or 0), cpus_alloc=int(kv.get("CPUAlloc", 0) or 0),
            gpus=_gpus(kv.get("Gres")), gpus_alloc=_gpus(kv.get("GresUsed")),
            memory_mb=int(kv.get("RealMemory", 0) or 0), memory_alloc_mb=int(kv.get("AllocMem", 0) or 0),
            reason=reason or None,
            features=[f for f in kv.get("AvailableFeatures", "").split(",") if f and f != "(null)"],
            load=float(load) if re.match(r"^[\d.]+$", load) else None,
        ))
    return out


def parse_partitions_text(text: str) -> list[Partition]:
    """``scontrol show partition -o``."""
    out = []
    for line in text.splitlines():
        if not line.startswith("PartitionName="):
            continue
        kv = _kv(line)
        max_nodes = kv.get("MaxNodes", "UNLIMITED")
        out.append(Partition(
            name=kv["PartitionName"], state=kv.get("State", "UP").lower(), default=kv.get("Default") == "YES",
            nodes=expand(kv.get("Nodes", "")) if kv.get("Nodes") not in (None, "", "(null)") else [],
            total_nodes=int(kv.get("TotalNodes", 0) or 0), total_cpus=int(kv.get("TotalCPUs", 0) or 0),
            max_time=parse_duration(kv.get("MaxTime", "")), default_time=parse_duration(kv.get("DefaultTime", "")),
            max_nodes=None if max_nodes == "UNLIMITED" else int(max_nodes),
        ))
    return out


def parse_partitions_json(data: dict[str, Any]) -> list[Partition]:
    """``scontrol show partition --json`` (23.02+)."""
    out = []
    for p in data.get("partitions", []):
        nodes = (p.get("nodes") or {}).get("configured", "")
        state = flags((p.get("partition") or {}).get("state")) or ["UP"]
        maxima = p.get("maximums") or {}
        defaults = p.get("defaults") or {}
        out.append(Partition(
            name=p["name"], state=state[0].lower(),
            default="DEFAULT" in flags((p.get("flags") or []) + list((p.get("partition") or {}).get("flags") or [])),
            nodes=expand(nodes), total_nodes=number((p.get("nodes") or {}).get("total")) or len(expand(nodes)),
            total_cpus=number((p.get("cpus") or {}).get("total")) or 0,
            max_time=seconds_from_minutes(maxima.get("time")), max_nodes=number(maxima.get("nodes")),
            default_time=seconds_from_minutes(defaults.get("time")),
        ))
    return out


def _exit_code(value: Any) -> int | None:
    if isinstance(value, dict):
        rc = value.get("return_code")
        status = flags(value.get("status"))
        code = number(rc)
        if code is None and "SIGNALED" in status:
            return -1
        return code
    if isinstance(value, str) and ":" in value:
        return int(value.split(":")[0])
    return number(value)


def parse_squeue_json(data: dict[str, Any]) -> list[Job]:
    """``squeue --json`` of either generation."""
    out = []
    for j in data.get("jobs", []):
        reason = j.get("state_reason")
        state = job_state(j.get("job_state"), reason)
        nodes = j.get("nodes") or ""
        out.append(Job(
            job_id=str(j["job_id"]), state=state, name=j.get("name", ""), user=j.get("user_name", ""),
            account=j.get("account"), partition=j.get("partition"),
            nodes=expand(nodes) if nodes else [], num_nodes=number(j.get("node_count")) or 0,
            num_cpus=number(j.get("cpus")) or 0, num_gpus=_gpus(j.get("tres_per_node") or j.get("tres_alloc_str")),
            submit_time=number(j.get("submit_time")), start_time=number(j.get("start_time")) or None,
            end_time=number(j.get("end_time")) or None, time_limit=seconds_from_minutes(j.get("time_limit")),
            exit_code=_exit_code(j.get("exit_code")) if state.final else None,
            reason=None if reason in (None, "None") else reason,
        ))
    return out


def parse_sacct_json(data: dict[str, Any]) -> list[Job]:
    """``sacct --json`` of either generation (finished jobs and their exit codes)."""
    out = []
    for j in data.get("jobs", []):
        st = j.get("state") or {}
        reason = st.get("reason")
        state = job_state(st.get("current"), reason)
        t = j.get("time") or {}
        nodes = j.get("nodes") or ""
        out.append(Job(
            job_id=str(j["job_id"]), state=state, name=j.get("name", ""), user=j.get("user", ""),
            account=j.get("account"), partition=j.get("partition"),
            nodes=expand(nodes) if nodes and nodes != "None assigned" else [],
            num_nodes=number(j.get("allocation_nodes")) or 0,
            submit_time=number(t.get("submission")), start_time=number(t.get("start")) or None,
            end_time=number(t.get("end")) or None, time_limit=seconds_from_minutes(t.get("limit")),
            exit_code=_exit_code(j.get("exit_code")) if state.final else None,
            reason=None if reason in (None, "None") else reason,
        ))
    return out


ASSOC_FORMAT = "cluster,account,user,partition,qos,defaultqos,maxjobs,maxsubmit,maxwall,grptres,maxtres"


def parse_assoc_text(text: str) -> list[Allocation]:
    """``sacctmgr -P -n show assoc format=<ASSOC_FORMAT>``: one user association per line."""
    out = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 11:
            continue
        _cluster, account, user, partition, qos, default_qos, maxjobs, maxsubmit, maxwall, grptres, maxtres = parts[:11]
        if not user:
            continue  # account-level rows; the user's rows carry the limits that apply
        limits: dict[str, Any] = {}
        if maxjobs:
            limits["max_jobs"] = int(maxjobs)
        if maxsubmit:
            limits["max_submit_jobs"] = int(maxsubmit)
        if maxwall:
            limits["max_wall"] = parse_duration(maxwall)
        if grptres:
            limits["group_tres"] = grptres
        if maxtres:
            limits["max_tres"] = maxtres
        out.append(Allocation(account=account, user=user, partition=partition or None,
                              qos=[q for q in qos.split(",") if q], default_qos=default_qos or None, limits=limits))
    return out


def parse_version(text: str) -> tuple[int, int]:
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def fill_partition_counts(partitions: list[Partition], nodes: list[Node]) -> None:
    """Idle and total counts per partition from node states (schedulers report them per node)."""
    by_name = {n.name: n for n in nodes}
    usable = (NodeState.idle, NodeState.mixed)
    for p in partitions:
        members = [by_name[n] for n in p.nodes if n in by_name]
        p.total_nodes = p.total_nodes or len(members)
        p.idle_nodes = sum(1 for n in members if n.state is NodeState.idle and not n.not_responding)
        p.total_cpus = p.total_cpus or sum(n.cpus for n in members)
        p.idle_cpus = sum(n.cpus - n.cpus_alloc for n in members if n.state in usable and not n.not_responding)
        p.total_gpus = sum(n.gpus for n in members)
        p.idle_gpus = sum(n.gpus - n.gpus_alloc for n in members if n.state in usable and not n.not_responding)


# -- the backend --------------------------------------------------------------------------------


class Slurm(BatchSystem):
    name = "slurm"
    psij_executor = "slurm"

    def __init__(self, timeout: float = 30.0, finished_window: int = 3600) -> None:
        self.timeout = timeout
        self.finished_window = finished_window
        self._version: tuple[int, int] | None = None

    async def version(self) -> tuple[int, int]:
        if self._version is None:
            self._version = parse_version(await run_command(["sinfo", "--version"], timeout=self.timeout))
        return self._version

    async def _json(self, cmd: list[str]) -> dict[str, Any]:
        out = await run_command(cmd, timeout=self.timeout)
        return orjson.loads(out) if out.strip() else {}

    async def nodes(self) -> list[Node]:
        if await self.version() >= (23, 2):
            return parse_nodes_json(await self._json(["scontrol", "show", "node", "--json"]))
        return parse_nodes_json(await self._json(["sinfo", "--json"]))

    async def partitions(self) -> list[Partition]:
        if await self.version() >= (23, 2):
            parts = parse_partitions_json(await self._json(["scontrol", "show", "partition", "--json"]))
        else:
            parts = parse_partitions_text(await run_command(["scontrol", "show", "partition", "-o"],
                                                            timeout=self.timeout))
        fill_partition_counts(parts, await self.nodes())
        return parts

    async def jobs(self, user: str | None = None, partition: str | None = None,
                   include_finished: bool = False) -> list[Job]:
        cmd = ["squeue", "--json"]
        if user:
            cmd += ["--user", user]
        if partition:
            cmd += ["--partition", partition]
        # squeue --json of 22.05 ignores --user/--partition/--jobs: filter here, for every version
        jobs = [j for j in parse_squeue_json(await self._json(cmd))
                if (user is None or j.user == user) and (partition is None or j.partition == partition)]
        if include_finished:
            seen = {j.job_id for j in jobs}
            for job in await self.finished(user, partition):
                if job.job_id not in seen:
                    jobs.append(job)
        return jobs

    async def finished(self, user: str | None = None, partition: str | None = None) -> list[Job]:
        """Jobs that ended in the last ``finished_window`` seconds (needs slurmdbd)."""
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - self.finished_window))
        cmd = ["sacct", "--json", "-X", "-S", since]
        cmd += ["--user", user] if user else ["--allusers"]
        if partition:
            cmd += ["--partition", partition]
        return [j for j in parse_sacct_json(await self._json(cmd))
                if j.state.final and (user is None or j.user == user)
                and (partition is None or j.partition == partition)]

    async def job(self, job_id: str) -> Job | None:
        live = parse_squeue_json(await self._json(["squeue", "--json", "--jobs", job_id, "--states", "all"]))
        for job in live:
            if job.job_id == job_id:
                return job
        done = parse_sacct_json(await self._json(["sacct", "--json", "-X", "--allusers", "--jobs", job_id]))
        return next((job for job in done if job.job_id == job_id), None)

    async def allocations(self, user: str | None = None) -> list[Allocation]:
        user = user or getpass.getuser()
        out = await run_command(["sacctmgr", "-P", "-n", "show", "assoc", f"user={user}", f"format={ASSOC_FORMAT}"],
                                timeout=self.timeout)
        return parse_assoc_text(out)

    async def cancel(self, job_id: str) -> None:
        await run_command(["scancel", job_id], timeout=self.timeout)
