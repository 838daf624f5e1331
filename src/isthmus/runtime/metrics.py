"""A plugin host's own Prometheus metrics (``GET /_edge/metrics``, ``/{edge}/_edge/metrics`` via the bridge).

One registry per ``PluginHost``. Everything is read when scraped — sessions per plugin, which
plugins run, the scheduler's query latency, and whatever each plugin's ``collect_metrics()``
yields (jobs and tasks by state) — except plugin errors, counted by the dispatcher as answers
go out. A plugin whose hook raises is logged and left out of that scrape; the rest still show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..schedulers.base import query_metrics

log = logging.getLogger("isthmus.metrics")

OTHER = "other"  # the plugin label of paths that name no plugin of this host


def render_registry(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of ``registry``: OpenMetrics if ``accept`` asks for it, else the text format."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Host(Protocol):
    """What is read of ``runtime.host.PluginHost``."""

    @property
    def records(self) -> Mapping[str, Any]: ...


class EdgeMetrics(Collector):
    """The metrics of one plugin host, in a registry of its own."""

    def __init__(self, host: _Host) -> None:
        self._host = host
        self.errors: dict[tuple[str, int], int] = {}  # (plugin, status) -> answers with that 5xx status
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def plugin_error(self, plugin: str, status: int) -> None:
        """Count a 5xx answer (an exception in a handler, a failing scheduler, a plugin down)."""
        if plugin not in self._host.records:
            plugin = OTHER  # the path is the caller's: only this host's plugin ids become labels
        key = (plugin, status if 500 <= status < 600 else 500)
        self.errors[key] = self.errors.get(key, 0) + 1

    def render(self, accept: str | None) -> tuple[bytes, str]:
        return render_registry(self.registry, accept)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("isthmus_edge_plugin_up", "1 if the plugin runs, 0 if it failed to load or start.",
                               labels=["plugin"])
        sessions = GaugeMetricFamily("isthmus_edge_plugin_sessions", "Open sessions, by plugin.",
                                     labels=["plugin"])
        plugins = []
        for pid, record in self._host.records.items():
            if not record.enabled:
                continue
            up.add_metric([pid], 0.0 if record.error or record.plugin is None else 1.0)
            if record.plugin is not None:
                sessions.add_metric([pid], len(record.plugin._sessions))
                if not record.error:
                    plugins.append((pid, record.plugin))
        yield up
        yield sessions
        errors = CounterMetricFamily("isthmus_edge_plugin_errors", "Plugin answers with a 5xx status: an "
                                     "exception in a handler, a scheduler failure, a plugin that is down.",
                                     labels=["plugin", "status"])
        for (plugin, status), count in sorted(self.errors.items()):
            errors.add_metric([plugin, str(status)], count)
        yield errors
        yield from query_metrics()
        for pid, plugin in plugins:
            try:
                yield from list(plugin.collect_metrics())
            except Exception:
                log.exception("collect_metrics of plugin %s failed; its metrics are left out", pid)
