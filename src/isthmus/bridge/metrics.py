"""The bridge's Prometheus metrics (``GET /metrics``): requests, latency, edges, events, link traffic.

Requests are counted on the hot path (``observe``, once per proxied request) into children
cached by their label values, so a request costs one dict lookup and two increments. Every
other figure is read from the bridge when scraped (``_Scraped``): nothing to keep in step.

Label sets stay bounded whatever a client sends: the caller passes only connected edges,
announced plugins and known methods; statuses outside 100-599 become ``other``. The latency
histogram has no edge label: 10,000 edges x buckets would be millions of series.

``render`` is safe in a worker thread (prometheus_client locks its children; the bridge's sets
are copied in one step). Measured: 20,000 request series (10,000 edges, two statuses) render
in ~0.4 s, so a bridge with that many edges should render off the event loop
(``await asyncio.to_thread(metrics.render, accept)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..runtime.metrics import render_registry
from ..wire.peer import Peer

# Proxy latency buckets, seconds: most calls take a millisecond or ten; jobs and files take longer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STATUSES = {status: str(status) for status in range(100, 600)}


class _Edges(Protocol):
    """What is read of ``bridge.edges.EdgeRegistry``."""

    @property
    def edges(self) -> Mapping[str, object]: ...
    @property
    def links(self) -> set[Peer]: ...
    @property
    def retired(self) -> list[int]: ...


class _Bus(Protocol):
    """What is read of ``bridge.events.EventBus`` (or the Redis one)."""

    @property
    def subscribers(self) -> int: ...
    @property
    def published(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def lost(self) -> int: ...


class MetricsSource(Protocol):
    """What ``BridgeMetrics`` reads of the bridge (``bridge.app.Bridge``)."""

    @property
    def edges(self) -> _Edges: ...
    @property
    def bus(self) -> _Bus: ...


class BridgeMetrics:
    """One bridge's metrics in a registry of its own (several bridges may share a process)."""

    def __init__(self, bridge: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter("isthmus_bridge_requests", "Requests proxied to edges and bridge plugins.",
                                 ["edge", "plugin", "method", "status"], registry=self.registry)
        self._latency = Histogram("isthmus_bridge_request_seconds",
                                  "Time from the request to the end of its answer, by plugin and method.",
                                  ["plugin", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._errors = Counter("isthmus_bridge_plugin_errors", "Requests answered with a 5xx status.",
                               ["edge", "plugin"], registry=self.registry)
        self.registry.register(_Scraped(bridge))
        self._bridge = bridge
        # (edge, plugin, method, status) -> (request counter child, latency child, error child or None)
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram, Counter | None]] = {}
        self._by_edge: dict[str, set[tuple[str, str, str, int]]] = {}  # edge -> its keys in _children

    def observe(self, edge: str, plugin: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (hot path: no allocation once its labels were seen)."""
        key = (edge, plugin, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._new_children(key)
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def _new_children(self, key: tuple[str, str, str, int]) -> tuple[Counter, Histogram, Counter | None]:
        edge, plugin, method, status = key
        if status not in _STATUSES and status != 0:  # every odd status shares one cache entry
            key = (edge, plugin, method, 0)
            cached = self._children.get(key)
            if cached is not None:
                return cached
        errors = self._errors.labels(edge, plugin) if status >= 500 else None
        children = (self._requests.labels(edge, plugin, method, _STATUSES.get(status, "other")),
                    self._latency.labels(plugin, method), errors)
        self._children[key] = children
        self._by_edge.setdefault(edge, set()).add(key)
        return children

    def on_topology(self, delta: Mapping[str, object]) -> None:
        """Drop the series of edges that left (a topology listener), so that edges coming and going
        under new names cannot grow the exposition without bound; one that comes back starts its
        counters again from zero, which Prometheus reads as a counter reset."""
        left = delta.get("left")
        if not isinstance(left, Mapping):
            return
        connected = self._bridge.edges.edges
        for edge in left:
            if edge in connected:
                continue
            for key in self._by_edge.pop(edge, ()):
                self._children.pop(key, None)
                _, plugin, method, status = key
                _forget(self._requests, edge, plugin, method, _STATUSES.get(status, "other"))
                if status >= 500:
                    _forget(self._errors, edge, plugin)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (body, content type): OpenMetrics when ``accept`` asks for it, else text."""
        return render_registry(self.registry, accept)


def _forget(metric: Counter, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:  # already gone (several keys share an error series)
        pass


class _Scraped(Collector):
    """Figures read from the bridge at scrape time: O(edges) per scrape, nothing on the hot path."""

    def __init__(self, bridge: MetricsSource) -> None:
        self._bridge = bridge

    def collect(self) -> Iterator[Metric]:
        edges, bus = self._bridge.edges, self._bridge.bus
        yield GaugeMetricFamily("isthmus_bridge_edges_connected", "Edges connected to this bridge.",
                                value=len(edges.edges))
        yield GaugeMetricFamily("isthmus_bridge_event_clients", "Clients following GET /events.",
                                value=bus.subscribers)
        yield CounterMetricFamily("isthmus_bridge_events_published", "Events published on the event stream.",
                                  value=bus.published)
        yield CounterMetricFamily("isthmus_bridge_events_dropped",
                                  "Events slow event-stream clients lost (each told to its client in a gap event).",
                                  value=bus.dropped)
        yield CounterMetricFamily("isthmus_bridge_events_lost",
                                  "Events lost before reaching any client (several bridges: Redis unreachable "
                                  "too long).", value=bus.lost)
        # list(): one step under the GIL, so a scrape rendered in a thread never sees the set change
        frames_in, frames_out, bytes_in, bytes_out = link_traffic(list(edges.links), list(edges.retired))
        frames = CounterMetricFamily("isthmus_bridge_link_frames", "Frames over edge links, by direction.",
                                     labels=["direction"])
        frames.add_metric(["in"], frames_in)
        frames.add_metric(["out"], frames_out)
        yield frames
        traffic = CounterMetricFamily("isthmus_bridge_link_bytes", "WebSocket payload bytes over edge links, "
                                      "by direction.", labels=["direction"])
        traffic.add_metric(["in"], bytes_in)
        traffic.add_metric(["out"], bytes_out)
        yield traffic


def link_traffic(links: Iterable[Peer], retired: list[int]) -> tuple[int, int, int, int]:
    """Frames in, frames out, bytes in, bytes out: open links plus those already closed."""
    frames_in, frames_out, bytes_in, bytes_out = retired
    for peer in links:
        frames_in += peer.frames_in
        frames_out += peer.frames_out
        bytes_in += peer.bytes_in
        bytes_out += peer.bytes_out
    return frames_in, frames_out, bytes_in, bytes_out
