"""Cluster metrics over time: one bounded ring of samples, read as columns for charts.

Every series (a metric of one node, room, partition or the whole cluster) is a
preallocated ``array('f')`` of ``size`` slots sharing one time axis, so memory is fixed by
``size × series × 4 bytes`` (504 nodes × 1 h at 15 s: about 2 MB) and a sample costs one
store per series, whatever has been kept before. A series not written for a whole ring
(a node that left) is dropped. Reads return ``[times, values, ...]`` in time order —
the shape ``charts.timeSeries`` (and uPlot) take — with NaN for gaps (``null`` in JSON).
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from ...jobstates import JobState
from .view import ClusterView

NAN = math.nan
SCOPES = ("cluster", "room", "partition", "node")
MAX_SERIES = 2000  # per answer: 500 nodes × 4 metrics fit; beyond that, ask for fewer


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    unit: str
    scopes: tuple[str, ...]


METRICS = {m.id: m for m in (
    Metric("util", "CPU utilisation (allocated share)", "%", SCOPES),
    Metric("load", "Load (mean over nodes)", "", SCOPES),
    Metric("temperature", "Temperature (max over nodes)", "°C", ("cluster", "room", "node")),
    Metric("power", "Power (sum over nodes)", "W", ("cluster", "room", "node")),
    Metric("idle_nodes", "Free nodes", "nodes", ("cluster", "partition")),
    Metric("total_nodes", "Nodes", "nodes", ("cluster", "partition")),
    Metric("idle_cpus", "Free CPUs", "cores", ("cluster", "partition")),
    Metric("total_cpus", "CPUs", "cores", ("cluster", "partition")),
    Metric("running_jobs", "Running jobs", "jobs", ("cluster", "partition")),
    Metric("pending_jobs", "Queue length (pending jobs)", "jobs", ("cluster", "partition")),
    Metric("wait_mean", "Mean wait of pending jobs", "s", ("cluster", "partition")),
    Metric("wait_max", "Longest wait of a pending job", "s", ("cluster", "partition")),
)}

Key = tuple[str, str, str]  # (scope, target, metric); the cluster's target is ""


class _Sums:
    """Running sums for one room, partition or the cluster, filled in one pass over nodes."""

    __slots__ = ("alloc", "cpus", "load", "loaded", "power", "powered", "temp")

    def __init__(self) -> None:
        self.alloc = self.cpus = self.loaded = self.powered = 0
        self.load = self.power = 0.0
        self.temp = NAN

    def add(self, node: dict[str, Any]) -> None:
        self.alloc += node["cpus_alloc"]
        self.cpus += node["cpus"]
        if node["load"] is not None:
            self.load += node["load"]
            self.loaded += 1
        metrics = node["metrics"]
        if metrics.get("temperature") is not None:
            t = float(metrics["temperature"])
            self.temp = t if math.isnan(self.temp) else max(self.temp, t)
        if metrics.get("power") is not None:
            self.power += float(metrics["power"])
            self.powered += 1

    def values(self) -> dict[str, float]:
        return {"util": 100.0 * self.alloc / self.cpus if self.cpus else NAN,
                "load": self.load / self.loaded if self.loaded else NAN,
                "temperature": self.temp, "power": self.power if self.powered else NAN}


def _queue(jobs: list[Any], clock: float) -> dict[str, float]:
    waits = [max(0.0, clock - j.submit_time) for j in jobs if j.state is JobState.PENDING
             and j.submit_time is not None]
    return {"running_jobs": float(sum(1 for j in jobs if j.state is JobState.RUNNING)),
            "pending_jobs": float(sum(1 for j in jobs if j.state is JobState.PENDING)),
            "wait_mean": sum(waits) / len(waits) if waits else 0.0, "wait_max": max(waits, default=0.0)}


def sample(view: ClusterView, clock: float | None = None) -> dict[Key, float]:
    """Every series' value in ``view``: one pass over nodes and one over jobs.

    ``clock`` is the scheduler's "now" for job waits (the simulator keeps simulated time);
    the snapshot's time when the scheduler has no clock of its own.
    """
    now = view.time if clock is None else clock
    out: dict[Key, float] = {}
    cluster = _Sums()
    rooms: dict[str, _Sums] = {}
    parts: dict[str, _Sums] = {}
    for name, node in view.nodes.items():
        cluster.add(node)
        if node["room"] is not None:
            rooms.setdefault(node["room"], _Sums()).add(node)
        for p in node["partitions"]:
            parts.setdefault(p, _Sums()).add(node)
        m = node["metrics"]
        out[("node", name, "util")] = 100.0 * node["cpus_alloc"] / node["cpus"] if node["cpus"] else NAN
        out[("node", name, "load")] = NAN if node["load"] is None else float(node["load"])
        out[("node", name, "temperature")] = float(m["temperature"]) if m.get("temperature") is not None else NAN
        out[("node", name, "power")] = float(m["power"]) if m.get("power") is not None else NAN
    for room, sums in rooms.items():
        out.update({("room", room, k): v for k, v in sums.values().items()})
    jobs_by_part: dict[str, list[Any]] = {}
    for job in view.jobs:
        if job.partition is not None:
            jobs_by_part.setdefault(job.partition, []).append(job)
    totals = {"idle_nodes": 0.0, "total_nodes": 0.0, "idle_cpus": 0.0, "total_cpus": 0.0}
    for p in view.partitions_raw:
        counts = {"idle_nodes": float(p.idle_nodes), "total_nodes": float(p.total_nodes),
                  "idle_cpus": float(p.idle_cpus), "total_cpus": float(p.total_cpus)}
        own = parts.get(p.name, _Sums()).values()
        values = {**counts, "util": own["util"], "load": own["load"], **_queue(jobs_by_part.get(p.name, []), now)}
        out.update({("partition", p.name, k): v for k, v in values.items()})
        for k in totals:
            totals[k] += counts[k]
    out.update({("cluster", "", k): v for k, v in {**cluster.values(), **totals, **_queue(view.jobs, now)}.items()})
    return out


class History:
    """The ring: ``size`` samples, at most one per ``interval`` seconds."""

    def __init__(self, size: int, interval: float) -> None:
        self.size = size
        self.interval = interval
        self.head = 0  # the slot the next sample goes to
        self.count = 0  # samples held (≤ size)
        self.samples = 0  # samples ever taken
        self.times = array("d", [NAN]) * size
        self.series: dict[Key, array[float]] = {}
        self._written: dict[Key, int] = {}  # sample number each series was last given a value
        self._blank = array("f", [NAN]) * size

    def due(self, when: float) -> bool:
        """Whether a snapshot taken ``when`` should become a sample (10 % slack for timer jitter)."""
        return self.count == 0 or when - self.last_time >= 0.9 * self.interval

    @property
    def last_time(self) -> float:
        return self.times[(self.head - 1) % self.size] if self.count else NAN

    def record(self, when: float, values: dict[Key, float]) -> None:
        """Store one sample: one write per series (absent ones get NaN), drop series unseen for a ring."""
        i = self.head
        self.times[i] = round(when, 3)  # as answered: a client's since=<last time> then excludes it exactly
        self.samples += 1
        stale: list[Key] = []
        for key, column in self.series.items():
            value = values.get(key)
            if value is None:
                column[i] = NAN
                if self.samples - self._written[key] >= self.size:
                    stale.append(key)
            else:
                column[i] = value
                self._written[key] = self.samples
        for key in stale:
            del self.series[key], self._written[key]
        if len(values) > len(self.series):
            for key, value in values.items():
                if key not in self.series:
                    column = array("f", self._blank)
                    column[i] = value
                    self.series[key] = column
                    self._written[key] = self.samples
        self.head = (i + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def maybe_record(self, view: ClusterView, clock: float | None = None) -> bool:
        if not self.due(view.time):
            return False
        self.record(view.time, sample(view, clock))
        return True

    # -- reads ---------------------------------------------------------------------------------

    def _ordered(self, column: array[Any]) -> array[Any]:
        """``column`` oldest first (a copy of at most ``size`` slots)."""
        if self.count < self.size:
            return column[:self.count]
        return column[self.head:] + column[:self.head]

    def read(self, keys: list[Key], since: float | None = None) -> list[list[float]]:
        """``[times, values of keys[0], ...]`` for samples after ``since``, oldest first."""
        times = self._ordered(self.times)
        start = 0 if since is None else bisect_right(times, since)
        out: list[list[float]] = [[round(t, 3) for t in times[start:]]]
        n = len(out[0])
        for key in keys:
            column = self.series.get(key)
            if column is None:
                out.append([NAN] * n)
            else:
                out.append([round(v, 2) for v in self._ordered(column)[start:]])
        return out

    def targets(self, scope: str) -> set[str]:
        return {k[1] for k in self.series if k[0] == scope}

    def nbytes(self) -> int:
        """Bytes held by the ring's arrays and their index (what grows with nodes and size)."""
        arrays = sum(sys.getsizeof(c) for c in self.series.values()) + sys.getsizeof(self.times)
        index = sys.getsizeof(self.series) + sys.getsizeof(self._written) + sum(
            sys.getsizeof(k) for k in self.series)
        return arrays + index

    def catalog(self) -> dict[str, Any]:
        return {"metrics": [{"id": m.id, "name": m.name, "unit": m.unit, "scopes": list(m.scopes)}
                            for m in METRICS.values()],
                "interval": self.interval, "size": self.size, "samples": self.count,
                "series": len(self.series), "bytes": self.nbytes(),
                "span": round(self.times[(self.head - 1) % self.size] - self._ordered(self.times)[0], 3)
                if self.count else 0.0}


def _names(raw: str | None) -> list[str]:
    return [p for p in (s.strip() for s in (raw or "").split(",")) if p]


def select(history: History, view: ClusterView, metric: str | None, node: str | None = None,
           partition: str | None = None, room: str | None = None) -> tuple[str, list[Key]]:
    """The scope and series keys a ``GET history`` query names; ValueError/LookupError say what is wrong.

    ``metric`` is one id or several joined by commas; at most one of ``node``, ``partition``,
    ``room`` (each a name, names joined by commas, or ``*`` for all); none means the cluster.
    """
    metrics = _names(metric)
    unknown = [m for m in metrics if m not in METRICS]
    if not metrics or unknown:
        raise LookupError(f"unknown metric {', '.join(unknown) or '(none)'}; GET history lists them: "
                          f"{', '.join(METRICS)}")
    given = [(scope, raw) for scope, raw in (("node", node), ("partition", partition), ("room", room)) if raw]
    if len(given) > 1:
        raise ValueError("ask for one of node, partition or room at a time")
    scope, raw = given[0] if given else ("cluster", "")
    for m in metrics:
        if scope not in METRICS[m].scopes:
            raise ValueError(f"metric {m} has no {scope} scope (scopes: {', '.join(METRICS[m].scopes)})")
    known = {"node": set(view.nodes), "room": set(view.rooms),
             "partition": {p.name for p in view.partitions_raw}}.get(scope, {""}) | history.targets(scope)
    if scope == "cluster":
        targets = [""]
    elif raw == "*":
        targets = sorted(known)
    else:
        targets = _names(raw)
    if len(targets) * len(metrics) > MAX_SERIES:
        raise ValueError(f"{len(targets) * len(metrics)} series asked for; at most {MAX_SERIES} per request: "
                         f"ask for fewer {scope}s or metrics")
    missing = [t for t in targets if t not in known]
    if missing:
        raise LookupError(f"no {scope} {', '.join(repr(t) for t in missing[:5])}")
    return scope, [(scope, t, m) for t in targets for m in metrics]


def label(key: Key, several_targets: bool, several_metrics: bool) -> str:
    scope, target, metric = key
    if several_targets and several_metrics:
        return f"{target} {metric}"
    if several_targets:
        return target
    return metric if scope == "cluster" or several_metrics else f"{target} {metric}"
