"""Metrics without sockets: BridgeMetrics over a real registry and bus, link counters over an
in-memory link, and a real PluginHost's /_edge/metrics behind the dispatcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from isthmus import Plugin
from isthmus.bridge.auth import TokenStore
from isthmus.bridge.edges import EdgeRegistry
from isthmus.bridge.events import EventBus, serve_events
from isthmus.bridge.metrics import BridgeMetrics
from isthmus.config import AppConfig
from isthmus.runtime.dispatch import Dispatcher
from isthmus.runtime.host import PluginHost
from isthmus.types import Principal, Role
from isthmus.wire import protocol as P
from isthmus.wire.call import Call
from isthmus.wire.peer import Peer, memory_pair


class Source:
    """What a Bridge gives BridgeMetrics: its real edge registry and event bus."""

    def __init__(self, tmp: Path) -> None:
        self.bus = EventBus(queue_size=300)
        self.edges = EdgeRegistry(TokenStore(tmp / "tokens.json"), self.bus, max_body=1 << 20)


def parse(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_observe_counts_by_edge_and_times_by_plugin_and_method(tmp_path: Path) -> None:
    metrics = BridgeMetrics(Source(tmp_path))
    for edge in ("hpc1", "hpc2"):
        metrics.observe(edge, "psij", "GET", 200, 0.003)
    metrics.observe("hpc1", "psij", "POST", 502, 0.2)
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    got = parse(body)
    assert got[("isthmus_bridge_requests_total", frozenset({"edge": "hpc1", "plugin": "psij", "method": "GET",
                                                            "status": "200"}.items()))] == 1
    assert got[("isthmus_bridge_request_seconds_count", frozenset({"plugin": "psij", "method": "GET"}.items()))] == 2
    assert got[("isthmus_bridge_request_seconds_bucket", frozenset({"plugin": "psij", "method": "GET",
                                                                    "le": "0.0025"}.items()))] == 0
    assert got[("isthmus_bridge_request_seconds_bucket", frozenset({"plugin": "psij", "method": "GET",
                                                                    "le": "0.005"}.items()))] == 2
    assert got[("isthmus_bridge_plugin_errors_total", frozenset({"edge": "hpc1", "plugin": "psij"}.items()))] == 1
    assert not any(name == "isthmus_bridge_request_seconds_count" and "edge" in dict(labels) for name, labels in got)


def test_odd_statuses_share_one_series_and_one_cache_entry(tmp_path: Path) -> None:
    metrics = BridgeMetrics(Source(tmp_path))
    for status in range(600, 5600):  # whatever an edge may answer, the table stays small
        metrics.observe("e", "p", "GET", status, 0.001)
    assert len(metrics._children) == 1
    got = parse(metrics.render(None)[0])
    assert got[("isthmus_bridge_requests_total", frozenset({"edge": "e", "plugin": "p", "method": "GET",
                                                            "status": "other"}.items()))] == 5000


def test_the_series_of_an_edge_that_left_are_dropped(tmp_path: Path) -> None:
    """Edges coming and going under new names must not grow the exposition for ever."""
    source = Source(tmp_path)
    metrics = BridgeMetrics(source)
    for i in range(100):
        metrics.observe(f"gone{i}", "psij", "GET", 200, 0.001)
        metrics.observe(f"gone{i}", "psij", "POST", 503, 0.001)
    metrics.observe("back", "psij", "GET", 200, 0.001)
    metrics.observe("other", "psij", "GET", 200, 0.001)
    source.edges.edges["back"] = object()  # type: ignore[assignment]  # left and came back within the batch
    metrics.on_topology({"v": 2, "joined": {}, "left": {f"gone{i}": "c" for i in range(100)} | {"back": "c"}})
    got = parse(metrics.render(None)[0])
    edges = {dict(labels).get("edge") for name, labels in got if name.startswith("isthmus_bridge_requests")}
    assert edges == {"back", "other"}, edges
    assert len(metrics._children) == 2
    metrics.observe("gone1", "psij", "GET", 200, 0.001)  # back again: counted from zero
    got = parse(metrics.render(None)[0])
    assert got[("isthmus_bridge_requests_total", frozenset({"edge": "gone1", "plugin": "psij", "method": "GET",
                                                            "status": "200"}.items()))] == 1


def test_openmetrics_when_the_scraper_asks(tmp_path: Path) -> None:
    metrics = BridgeMetrics(Source(tmp_path))
    metrics.observe("e", "p", "GET", 200, 0.01)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") and b"isthmus_bridge_requests_total{" in body


def test_observe_is_cheap(tmp_path: Path) -> None:
    metrics = BridgeMetrics(Source(tmp_path))
    keys = [(f"edge{i % 50}", "psij", "GET", 200) for i in range(1000)]
    for edge, plugin, method, status in keys:
        metrics.observe(edge, plugin, method, status, 0.004)
    rounds = 100
    started = time.perf_counter()
    for _ in range(rounds):
        for edge, plugin, method, status in keys:
            metrics.observe(edge, plugin, method, status, 0.004)
    per_call = (time.perf_counter() - started) / (rounds * len(keys))
    print(f"BridgeMetrics.observe: {per_call * 1e6:.2f} µs/call")
    assert per_call < 20e-6  # measured ~1.5 µs; a proxied request costs ~100x that


@pytest.mark.asyncio
async def test_link_counters_match_both_ends_and_survive_the_link(tmp_path: Path) -> None:
    source = Source(tmp_path)
    metrics = BridgeMetrics(source)
    client, server = memory_pair("m")
    client.start()
    server.start()
    try:
        for i in range(5):
            client.send({"t": P.PING, "ts": float(i)})  # each is answered with a pong
        for _ in range(200):
            if client.frames_in >= 5:
                break
            await asyncio.sleep(0.01)
        assert client.frames_out == server.frames_in == 5 and client.bytes_out == server.bytes_in > 0
        assert server.frames_out == client.frames_in == 5 and server.bytes_out == client.bytes_in > 0
        source.edges.links.add(client)
        live = parse(metrics.render(None)[0])
        source.edges._retire(client)
        source.edges._retire(client)  # a second removal adds nothing
        retired = parse(metrics.render(None)[0])
    finally:
        await client.close()
        await server.close()
    key = ("isthmus_bridge_link_frames_total", frozenset({("direction", "out")}))
    assert live[key] == retired[key] == 5
    key = ("isthmus_bridge_link_bytes_total", frozenset({("direction", "in")}))
    assert live[key] == retired[key] == client.bytes_in


@pytest.mark.asyncio
async def test_events_a_slow_client_lost_are_counted_once(tmp_path: Path) -> None:
    source = Source(tmp_path)
    metrics = BridgeMetrics(source)
    bus = source.bus
    reading = asyncio.Event()
    gone = asyncio.Event()
    sent: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message.get("body", b""))
        if len(sent) == 2:  # the client stops reading after the greeting
            await reading.wait()

    scope = {"query_string": b"", "headers": []}
    stream = asyncio.create_task(serve_events(bus, Principal("a", Role.admin), scope, receive, send))
    while bus.subscribers == 0:
        await asyncio.sleep(0.001)
    for i in range(50):
        bus.topology({"v": i, "joined": {}, "left": []})
    for _ in range(200):  # the first event went out (blocked), the queue keeps ~300 bytes of the rest
        if len(sent) >= 2:
            break
        await asyncio.sleep(0.01)
    reading.set()
    for _ in range(200):
        if any(b"event: gap" in part for part in sent):
            break
        await asyncio.sleep(0.01)
    gone.set()
    await asyncio.wait_for(stream, 5)
    gap = next(part for part in sent if b"event: gap" in part)
    missed = int(gap.split(b'"missed":')[1].split(b",")[0])
    assert missed > 30 and bus.dropped == missed
    got = parse(metrics.render(None)[0])
    assert got[("isthmus_bridge_events_dropped_total", frozenset())] == missed
    assert got[("isthmus_bridge_events_published_total", frozenset())] == 50
    assert got[("isthmus_bridge_event_clients", frozenset())] == 0


# -- the edge side: a real PluginHost behind its dispatcher ---------------------------------------

class BrokenMetrics(Plugin):
    """A plugin whose collect_metrics fails: the scrape goes on without it."""

    plugin_name = "brokenmetrics"

    def collect_metrics(self) -> Iterator[Metric]:
        raise RuntimeError("the counter store is gone")


class QueueMetrics(Plugin):
    plugin_name = "queuemetrics"

    def collect_metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("queuemetrics_depth", "Items waiting.", value=7)


def joined(host: PluginHost) -> Peer:
    client, server = memory_pair("edge")
    server.handlers.update(Dispatcher(host.app, host.failed_plugin).handlers(server))

    def on_response(frame: P.Frame) -> None:
        call = client.calls.get(frame["id"])
        if isinstance(call, Call):
            call.on_response(frame)

    client.handlers[P.RESPONSE] = on_response
    client.start()
    server.start()
    return client


async def ask(client: Peer, rid: int, path: str, who: Principal) -> tuple[int, bytes]:
    call = Call(client, rid, 5.0)
    try:
        call.send({"t": P.REQUEST, "m": "GET", "p": path, "q": b"", "h": [], "pr": who.to_wire(), "b": b""}, False)
        response = await asyncio.wait_for(call.response, 5)
        call.answered = True
        return int(response["st"]), bytes(response.get("b") or b"")
    finally:
        call.finish()


@pytest.mark.asyncio
async def test_edge_metrics_errors_roles_and_plugin_hooks() -> None:
    host = PluginHost(AppConfig(), ["testplugins:PluginFaults", "tests.unit.test_metrics:BrokenMetrics",
                                    "tests.unit.test_metrics:QueueMetrics"], name="e1")
    host.load()
    await host.startup()
    client = joined(host)
    admin, scraper = Principal("a", Role.admin), Principal("prom", Role.metrics)
    try:
        assert (await ask(client, 1, "/faults/raise/boom", admin))[0] == 500
        assert (await ask(client, 2, "/faults/raise/value", admin))[0] == 400
        assert (await ask(client, 3, "/nonesuch/x", admin))[0] == 404
        status, body = await ask(client, 4, "/faults/raise/boom", scraper)
        assert status == 403 and b"metrics token" in body
        assert (await ask(client, 5, "/_edge/plugins", scraper))[0] == 403
        status, body = await ask(client, 6, "/_edge/metrics", scraper)
        assert status == 200
    finally:
        await client.close()
        await host.shutdown()
    host.metrics.plugin_error("attacker-chosen-name", 500)  # a path naming no plugin: "other"
    got = parse(body)
    assert got[("isthmus_edge_plugin_errors_total", frozenset({"plugin": "faults", "status": "500"}.items()))] == 1
    assert not any(name == "isthmus_edge_plugin_errors_total" and dict(labels)["status"] == "400"
                   for name, labels in got)
    assert got[("queuemetrics_depth", frozenset())] == 7
    assert got[("isthmus_edge_plugin_up", frozenset({("plugin", "brokenmetrics")}))] == 1
    assert got[("isthmus_edge_plugin_sessions", frozenset({("plugin", "faults")}))] == 0
    assert host.metrics.errors[("other", 500)] == 1
