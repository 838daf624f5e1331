"""A simulated HPC cluster that behaves like a scheduler: the ``simulated`` backend.

Deterministic under a seed: the same seed, the same calls and the same clock give the
same cluster. Time is driven by ``tick(dt)``; the simulator plugin ticks it with wall
time, tests tick it by hand. Jobs queue, start on free nodes, run and finish; node
metrics (temperature, power, load) follow their load; incidents and overrides bend the
picture for demos and tests.

Every change made through this object — a mode, an incident, an override, a drain, a job
submitted or cancelled, a rebuild, an incident or override running out — calls
``changed()`` (``BatchSystem.generation``), so the cluster view's cache knows at once that
its copy is stale. The workload moving on by itself (jobs starting and ending, metrics
drifting) does not: views of it age out.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import SchedulerError
from .base import BatchSystem, Job, JobState, Node, NodeState, Partition
from .hostlist import compress

MODES = ("full_ok", "light", "medium", "heavy", "chaos", "custom")
INCIDENT_TYPES = ("rack_down", "node_down", "drain", "thermal")
METRICS = {"temperature": "°C", "power": "W", "load": "", "cpu_util": "%"}
# fraction of nodes down / drained / hot, and racks down, per mode
MODE_MIX = {
    "full_ok": (0.0, 0.0, 0.0, 0),
    "light": (0.005, 0.01, 0.005, 0),
    "medium": (0.02, 0.03, 0.02, 0),
    "heavy": (0.04, 0.06, 0.04, 1),
    "chaos": (0.10, 0.10, 0.08, 2),
}


@dataclass
class SimNode:
    name: str
    rack: str
    slot: int
    partition: str
    cpus: int
    gpus: int
    memory_mb: int
    cpus_alloc: int = 0
    gpus_alloc: int = 0
    jobs: list[str] = field(default_factory=list)
    temperature: float = 30.0
    power: float = 150.0
    load: float = 0.0


@dataclass
class SimJob:
    job_id: str
    name: str
    user: str
    partition: str
    nodes_wanted: int
    cpus_per_node: int
    duration: float
    submit_time: float
    account: str = "sim"
    state: JobState = JobState.PENDING
    nodes: list[str] = field(default_factory=list)
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None
    gpus_per_node: int = 0
    command: str | None = None
    reason: str | None = "Priority"


@dataclass
class Incident:
    id: str
    type: str
    target: str
    until: float | None


@dataclass
class Override:
    id: str
    target: str  # node name or rack id
    kind: str  # metric | state
    key: str  # metric name, or "state"
    value: Any
    until: float | None

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "target": self.target, "kind": self.kind, "key": self.key, "value": self.value,
                "expires_in": None if self.until is None else max(0.0, round(self.until - now, 1))}


@dataclass
class SimSize:
    sites: int = 1
    rooms: int = 2
    racks_per_room: int = 6
    cpu_nodes_per_rack: int = 48
    gpu_racks_per_room: int = 1
    gpu_nodes_per_rack: int = 12
    cpus_per_node: int = 64
    gpus_per_node: int = 4


class SimulatedCluster(BatchSystem):
    name = "simulated"
    # Jobs submitted through PSI/J run for real on the edge (local executor); the
    # simulator's own workload is generated. See docs/cluster.md.
    psij_executor = "local"

    def __init__(self, seed: int = 42, size: SimSize | None = None, workload: bool = True,
                 start_time: float = 1_800_000_000.0) -> None:
        self.seed = seed
        self.size = size or SimSize()
        self.workload = workload
        self.start_time = start_time
        self.build()

    # -- construction -----------------------------------------------------------------------

    def build(self) -> None:
        """(Re)build the whole cluster from the seed."""
        self.rng = random.Random(self.seed)
        self.now = self.start_time
        self.node_map: dict[str, SimNode] = {}
        self.racks: dict[str, list[str]] = {}
        self.rack_room: dict[str, str] = {}
        self.rooms: dict[str, dict[str, Any]] = {}
        self.job_map: dict[str, SimJob] = {}
        self.incidents: dict[str, Incident] = {}
        self.overrides: dict[str, Override] = {}
        self.drains: dict[str, str] = {}  # node → reason, drained by an operator (``drain``)
        self.mode = "full_ok"
        self.changed()
        self.mode_targets: dict[str, set[str]] = {"down": set(), "drain": set(), "thermal": set(), "racks": set()}
        self._ids = itertools.count(1)
        self._job_ids = itertools.count(1000)
        s = self.size
        cpu_n = gpu_n = 0
        rack_n = 0
        for room_i in range(s.rooms):
            room_id = f"room-{chr(ord('a') + room_i)}"
            self.rooms[room_id] = {"id": room_id, "name": f"Room {chr(ord('A') + room_i)}", "site": "main"}
            for r in range(s.racks_per_room):
                rack_n += 1
                rack = f"r{rack_n:02d}"
                self.racks[rack] = []
                self.rack_room[rack] = room_id
                gpu_rack = r >= s.racks_per_room - s.gpu_racks_per_room
                count = s.gpu_nodes_per_rack if gpu_rack else s.cpu_nodes_per_rack
                for slot in range(1, count + 1):
                    if gpu_rack:
                        gpu_n += 1
                        node = SimNode(f"g{gpu_n:03d}", rack, slot * 3 - 2, "gpu", s.cpus_per_node // 2,
                                       s.gpus_per_node, 512_000)
                    else:
                        cpu_n += 1
                        node = SimNode(f"c{cpu_n:03d}", rack, slot, "cpu", s.cpus_per_node, 0, 256_000)
                    node.temperature = 28 + self.rng.random() * 4
                    self.node_map[node.name] = node
                    self.racks[rack].append(node.name)
        if self.workload:
            for _ in range(len(self.node_map) // 5):
                self._generate_job()
            self._schedule()

    # -- time ---------------------------------------------------------------------------------

    def tick(self, dt: float = 1.0) -> None:
        """Advance simulated time by ``dt`` seconds: finish, generate and start jobs; move metrics."""
        self.now += dt
        for job in list(self.job_map.values()):
            if job.state is JobState.RUNNING and job.start_time is not None and \
                    self.now - job.start_time >= job.duration:
                self._finish(job, JobState.DONE if self.rng.random() > 0.05 else JobState.FAILED)
        expired = [k for k, inc in self.incidents.items() if inc.until is not None and inc.until <= self.now]
        for key in expired:
            del self.incidents[key]
        lapsed = [k for k, ov in self.overrides.items() if ov.until is not None and ov.until <= self.now]
        for key in lapsed:
            del self.overrides[key]
        if expired or lapsed:
            self.changed()
        if self.workload:
            # a steady demand of about 70 % of the cores: submit while below it
            total = sum(n.cpus for n in self.node_map.values())
            busy = sum(n.cpus_alloc for n in self.node_map.values()) / max(1, total)
            pending = sum(1 for j in self.job_map.values() if j.state is JobState.PENDING)
            for _ in range(self.rng.randint(0, max(1, int(dt * 2)))):
                if busy < 0.7 or pending < 5:
                    self._generate_job()
        self._schedule()
        self._move_metrics(dt)
        # forget finished jobs after an hour so memory stays flat
        for key in [k for k, j in self.job_map.items() if j.end_time is not None and self.now - j.end_time > 3600]:
            del self.job_map[key]

    def _move_metrics(self, dt: float) -> None:
        k = 1 - math.exp(-dt / 30.0)  # thermal inertia of about 30 s
        hot = self._hot_nodes()
        for node in self.node_map.values():
            util = node.cpus_alloc / node.cpus if node.cpus else 0.0
            node.load = round(util * node.cpus * (0.9 + 0.2 * self.rng.random()), 2)
            target_t = 28 + 40 * util + (45 if node.name in hot else 0) + self.rng.uniform(-1, 1)
            node.temperature += (target_t - node.temperature) * k
            node.power = 120 + 280 * util + 300 * (node.gpus_alloc / node.gpus if node.gpus else 0)

    # -- workload -----------------------------------------------------------------------------

    def _generate_job(self) -> None:
        gpu = self.rng.random() < 0.15
        partition = "gpu" if gpu else "cpu"
        whole = self.rng.random() < 0.8
        nodes = self.rng.choice([1, 1, 1, 2, 2, 4, 8]) if whole else 1
        per_node = self.size.cpus_per_node // (2 if gpu else 1)
        cpus = per_node if whole else self.rng.randint(1, self.size.cpus_per_node // 2)
        job = SimJob(job_id=str(next(self._job_ids)), name=f"sim-{self.rng.randint(1, 9999)}",
                     user=self.rng.choice(["alice", "bob", "carol", "dave"]), partition=partition,
                     nodes_wanted=nodes, cpus_per_node=cpus, duration=self.rng.uniform(60, 3600),
                     submit_time=self.now, gpus_per_node=self.size.gpus_per_node if gpu and whole else 0)
        self.job_map[job.job_id] = job

    def _usable(self, node: SimNode) -> bool:
        state, not_responding = self._node_state(node)
        return not not_responding and state in (NodeState.idle, NodeState.mixed)

    def _schedule(self) -> None:
        pending = sorted((j for j in self.job_map.values() if j.state is JobState.PENDING), key=lambda j: j.submit_time)
        for job in pending:
            free = [n for n in self.node_map.values() if n.partition == job.partition and self._usable(n)
                    and n.cpus - n.cpus_alloc >= job.cpus_per_node and n.gpus - n.gpus_alloc >= job.gpus_per_node]
            if len(free) < job.nodes_wanted:
                job.reason = "Resources"
                continue
            chosen = free[: job.nodes_wanted]
            for node in chosen:
                node.cpus_alloc += job.cpus_per_node
                node.gpus_alloc += job.gpus_per_node
                node.jobs.append(job.job_id)
            job.nodes = [n.name for n in chosen]
            job.state = JobState.RUNNING
            job.start_time = self.now
            job.reason = None

    def _finish(self, job: SimJob, state: JobState, exit_code: int | None = None) -> None:
        for name in job.nodes:
            node = self.node_map.get(name)
            if node is not None and job.job_id in node.jobs:
                node.jobs.remove(job.job_id)
                node.cpus_alloc = max(0, node.cpus_alloc - job.cpus_per_node)
                node.gpus_alloc = max(0, node.gpus_alloc - job.gpus_per_node)
        job.state = state
        job.end_time = self.now
        job.exit_code = exit_code if exit_code is not None else (0 if state is JobState.DONE else 1)

    async def submit(self, name: str, user: str, partition: str = "cpu", nodes: int = 1, cpus: int = 1,
                     duration_s: float = 60.0, command: str | None = None) -> str:
        """Queue a job on simulated nodes; returns its id. It runs for ``duration_s`` simulated seconds."""
        if partition not in ("cpu", "gpu"):
            raise SchedulerError(f"no partition {partition!r} in the simulated cluster (cpu, gpu)")
        job = SimJob(job_id=str(next(self._job_ids)), name=name, user=user, partition=partition,
                     nodes_wanted=nodes, cpus_per_node=cpus, duration=duration_s, submit_time=self.now,
                     command=command)
        self.job_map[job.job_id] = job
        self._schedule()
        self.changed()
        return job.job_id

    # -- incidents, modes, overrides ----------------------------------------------------------

    def set_incident_mode(self, mode: str, counts: dict[str, int] | None = None) -> dict[str, Any]:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        rng = random.Random(f"{self.seed}:{mode}:{sorted((counts or {}).items())}")
        names = sorted(self.node_map)
        racks = sorted(self.racks)
        if mode == "custom":
            c = counts or {}
            n_down, n_drain, n_hot, n_racks = (int(c.get(k, 0)) for k in ("nodes_down", "nodes_drain",
                                                                          "thermal", "racks_down"))
        else:
            f_down, f_drain, f_hot, n_racks = MODE_MIX[mode]
            n_down, n_drain, n_hot = (round(f * len(names)) for f in (f_down, f_drain, f_hot))
        picked = rng.sample(names, min(len(names), n_down + n_drain + n_hot))
        self.mode = mode
        self.mode_targets = {"down": set(picked[:n_down]), "drain": set(picked[n_down:n_down + n_drain]),
                             "thermal": set(picked[n_down + n_drain:]),
                             "racks": set(rng.sample(racks, min(len(racks), n_racks)))}
        self._evict()
        self.changed()
        return {"mode": mode, **{k: len(v) for k, v in self.mode_targets.items()}}

    def incident(self, kind: str, target: str, duration: float | None = 300.0) -> Incident:
        if kind not in INCIDENT_TYPES:
            raise ValueError(f"unknown incident {kind!r}; expected one of {', '.join(INCIDENT_TYPES)}")
        if kind == "rack_down" and target not in self.racks:
            raise ValueError(f"no rack {target!r} (racks: {', '.join(sorted(self.racks))})")
        if kind != "rack_down" and target not in self.node_map and target not in self.racks:
            raise ValueError(f"no node or rack {target!r}")
        inc = Incident(f"inc-{next(self._ids)}", kind, target, None if not duration else self.now + duration)
        self.incidents[inc.id] = inc
        self._evict()
        self.changed()
        return inc

    def add_override(self, target: str, kind: str, key: str, value: Any, ttl: float | None = 600.0) -> Override:
        if target not in self.node_map and target not in self.racks:
            raise ValueError(f"no node or rack {target!r}")
        if kind == "metric" and key not in METRICS:
            raise ValueError(f"unknown metric {key!r}; expected one of {', '.join(METRICS)}")
        if kind == "state":
            key = "state"
            NodeState(value)  # ValueError names the bad state
        elif kind != "metric":
            raise ValueError("kind must be 'metric' or 'state'")
        ov = Override(f"ov-{next(self._ids)}", target, kind, key, value, None if not ttl else self.now + ttl)
        self.overrides[ov.id] = ov
        self._evict()
        self.changed()
        return ov

    def delete_override(self, override_id: str) -> bool:
        if self.overrides.pop(override_id, None) is None:
            return False
        self.changed()
        return True

    def clear_overrides(self) -> int:
        n = len(self.overrides)
        self.overrides.clear()
        if n:
            self.changed()
        return n

    async def drain(self, node: str, reason: str) -> None:
        """Drain ``node`` as an operator would: no new jobs; running ones finish (draining → drained)."""
        if node not in self.node_map:
            raise SchedulerError(f"no node {node!r} in the simulated cluster")
        self.drains[node] = reason
        self.changed()

    async def resume(self, node: str) -> None:
        """Undo ``drain`` (incidents and mode-drained nodes stay as they are)."""
        if node not in self.node_map:
            raise SchedulerError(f"no node {node!r} in the simulated cluster")
        if self.drains.pop(node, None) is not None:
            self.changed()

    def _evict(self) -> None:
        """Jobs on nodes that went down fail, as they would on a real cluster."""
        for job in list(self.job_map.values()):
            if job.state is JobState.RUNNING and any(self._node_state(self.node_map[n])[0] is NodeState.down
                                                     for n in job.nodes):
                self._finish(job, JobState.FAILED, exit_code=-9)

    # -- what a node looks like now -------------------------------------------------------------

    def _hot_nodes(self) -> set[str]:
        hot = set(self.mode_targets["thermal"])
        for inc in self.incidents.values():
            if inc.type == "thermal":
                hot.update(self.racks.get(inc.target, [inc.target]))
        return hot

    def _overrides_for(self, node: SimNode) -> list[Override]:
        return [ov for ov in self.overrides.values() if ov.target in (node.name, node.rack)]

    def _node_state(self, node: SimNode) -> tuple[NodeState, bool]:
        for ov in self._overrides_for(node):
            if ov.kind == "state":
                return NodeState(ov.value), False
        racks_down = set(self.mode_targets["racks"])
        racks_down.update(i.target for i in self.incidents.values() if i.type == "rack_down")
        if node.rack in racks_down:
            return NodeState.down, True
        down = node.name in self.mode_targets["down"] or any(
            i.type == "node_down" and i.target in (node.name, node.rack) for i in self.incidents.values())
        if down:
            return NodeState.down, True
        drain = node.name in self.drains or node.name in self.mode_targets["drain"] or any(
            i.type == "drain" and i.target in (node.name, node.rack) for i in self.incidents.values())
        if node.cpus_alloc == 0:
            base = NodeState.idle
        elif node.cpus_alloc >= node.cpus:
            base = NodeState.allocated
        else:
            base = NodeState.mixed
        if drain:
            return (NodeState.drained if base is NodeState.idle else NodeState.draining), False
        return base, False

    def _reason(self, node: SimNode, state: NodeState) -> str | None:
        if state in (NodeState.drained, NodeState.draining) and node.name in self.drains:
            return self.drains[node.name]
        for inc in self.incidents.values():
            if inc.target in (node.name, node.rack) and inc.type in ("rack_down", "node_down", "drain"):
                return f"simulated {inc.type.replace('_', ' ')} ({inc.id})"
        if state is NodeState.down:
            return "simulated failure (incident mode " + self.mode + ")"
        if state in (NodeState.drained, NodeState.draining):
            return "simulated maintenance drain"
        return None

    def node_metrics(self, node: SimNode) -> dict[str, float]:
        values = {"temperature": round(node.temperature, 1), "power": round(node.power, 1), "load": node.load,
                  "cpu_util": round(100 * node.cpus_alloc / node.cpus, 1) if node.cpus else 0.0}
        state, _ = self._node_state(node)
        if state is NodeState.down:
            values.update(power=0.0, load=0.0, cpu_util=0.0)
        for ov in self._overrides_for(node):
            if ov.kind == "metric":
                values[ov.key] = float(ov.value)
        return values

    def snapshot_node(self, node: SimNode) -> Node:
        state, not_responding = self._node_state(node)
        return Node(name=node.name, state=state, not_responding=not_responding, partitions=[node.partition],
                    cpus=node.cpus, cpus_alloc=node.cpus_alloc if state is not NodeState.down else 0,
                    gpus=node.gpus, gpus_alloc=node.gpus_alloc, memory_mb=node.memory_mb,
                    memory_alloc_mb=node.memory_mb * node.cpus_alloc // node.cpus if node.cpus else 0,
                    reason=self._reason(node, state), load=node.load, metrics=self.node_metrics(node))

    def topology(self) -> dict[str, Any]:
        """Sites → rooms → racks → slots, in the topology file's shape (see ``isthmus.plugins.cluster.topology``)."""
        rooms = []
        for room_id, room in self.rooms.items():
            racks = [{"id": rack, "name": rack.upper(), "slots": 48,
                      "nodes": [{"name": n, "slot": self.node_map[n].slot} for n in names]}
                     for rack, names in self.racks.items() if self.rack_room[rack] == room_id]
            rooms.append({"id": room_id, "name": room["name"], "racks": racks})
        return {"sites": [{"id": "main", "name": "Simulated site", "rooms": rooms}]}

    # -- BatchSystem --------------------------------------------------------------------------

    async def nodes(self) -> list[Node]:
        return [self.snapshot_node(n) for n in self.node_map.values()]

    async def partitions(self) -> list[Partition]:
        from .slurm import fill_partition_counts

        members = {p: [n for n, v in self.node_map.items() if v.partition == p] for p in ("cpu", "gpu")}
        parts = [Partition(name="cpu", default=True, nodes=members["cpu"], max_time=86400, default_time=3600),
                 Partition(name="gpu", nodes=members["gpu"], max_time=172800, default_time=3600)]
        fill_partition_counts(parts, await self.nodes())
        return parts

    def _job(self, job: SimJob) -> Job:
        return Job(job_id=job.job_id, state=job.state, name=job.name, user=job.user, account=job.account,
                   partition=job.partition, nodes=list(job.nodes), num_nodes=job.nodes_wanted,
                   num_cpus=job.cpus_per_node * job.nodes_wanted, num_gpus=job.gpus_per_node * job.nodes_wanted,
                   submit_time=job.submit_time, start_time=job.start_time, end_time=job.end_time,
                   time_limit=int(max(job.duration * 1.5, 60)), exit_code=job.exit_code, reason=job.reason)

    async def jobs(self, user: str | None = None, partition: str | None = None,
                   include_finished: bool = False) -> list[Job]:
        return [self._job(j) for j in self.job_map.values()
                if (user is None or j.user == user) and (partition is None or j.partition == partition)
                and (include_finished or not j.state.final)]

    async def job(self, job_id: str) -> Job | None:
        job = self.job_map.get(job_id)
        return self._job(job) if job else None

    async def cancel(self, job_id: str) -> None:
        job = self.job_map.get(job_id)
        if job is None:
            raise SchedulerError(f"no job {job_id} in the simulated cluster")
        if not job.state.final:
            self._finish(job, JobState.CANCELLED, exit_code=-15)
            self.changed()

    def status(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for n in self.node_map.values():
            st = self._node_state(n)[0].value
            states[st] = states.get(st, 0) + 1
        return {"seed": self.seed, "time": self.now, "mode": self.mode, "nodes": len(self.node_map),
                "racks": len(self.racks), "rooms": len(self.rooms), "node_states": states,
                "jobs": {s.value: sum(1 for j in self.job_map.values() if j.state is s)
                         for s in (JobState.PENDING, JobState.RUNNING)},
                "incidents": len(self.incidents), "overrides": len(self.overrides), "drains": len(self.drains),
                "hostlist": compress(sorted(self.node_map))}
