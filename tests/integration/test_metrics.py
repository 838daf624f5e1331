"""Prometheus metrics through a real bridge and edge: ``/metrics`` and ``/{edge}/_edge/metrics``.

Every scrape is parsed with prometheus_client's own parser, and every check compares two
scrapes around real traffic (requests, jobs, tasks, failures), so a counter that does not
move fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from isthmus.testing.stack import Stack, poll_for
from tests.conftest import support_env

ROOT = Path(__file__).parents[2]
CONFIG = {"scheduler": "none", "plugins": {"psij": {"enabled": True, "allowed_directories": ["~", "/tmp"]}}}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = support_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
    with Stack(plugins=["sysinfo", "psij", "tasks", "testplugins:PluginFaults"], env=env, config=CONFIG,
               workdir=tmp_path_factory.mktemp("metrics")) as s:
        yield s


def scrape(http: httpx.Client, path: str = "/metrics") -> Samples:
    resp = http.get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_latency_and_link_traffic_move_with_traffic(stack: Stack) -> None:
    with stack.http() as http:
        before = scrape(http)
        for _ in range(5):
            assert http.get("/test/sysinfo/homedir").status_code == 200
        assert http.get("/test/sysinfo/no-such-route").status_code == 404
        after = scrape(http)
    key = {"edge": "test", "plugin": "sysinfo", "method": "GET"}
    assert value(after, "isthmus_bridge_requests_total", **key, status="200") - \
        value(before, "isthmus_bridge_requests_total", **key, status="200") == 5
    assert value(after, "isthmus_bridge_requests_total", **key, status="404") - \
        value(before, "isthmus_bridge_requests_total", **key, status="404") == 1
    latency = {"plugin": "sysinfo", "method": "GET"}
    assert value(after, "isthmus_bridge_request_seconds_count", **latency) - \
        value(before, "isthmus_bridge_request_seconds_count", **latency) == 6
    assert value(after, "isthmus_bridge_request_seconds_sum", **latency) > \
        value(before, "isthmus_bridge_request_seconds_sum", **latency)
    assert value(after, "isthmus_bridge_request_seconds_bucket", **latency, le="+Inf") == \
        value(after, "isthmus_bridge_request_seconds_count", **latency)
    assert value(after, "isthmus_bridge_edges_connected") == 1
    for direction in ("in", "out"):  # each request is at least one frame each way
        assert value(after, "isthmus_bridge_link_frames_total", direction=direction) - \
            value(before, "isthmus_bridge_link_frames_total", direction=direction) >= 6
        assert value(after, "isthmus_bridge_link_bytes_total", direction=direction) - \
            value(before, "isthmus_bridge_link_bytes_total", direction=direction) > 6 * 20


def test_a_path_naming_no_plugin_never_becomes_a_label(stack: Stack) -> None:
    with stack.http() as http:
        for i in range(3):
            assert http.get(f"/test/attacker-{i}/x").status_code == 404
        after = scrape(http)
    plugins = {dict(labels).get("plugin") for name, labels in after if name == "isthmus_bridge_requests_total"}
    assert not any(p and p.startswith("attacker") for p in plugins), plugins
    assert value(after, "isthmus_bridge_requests_total", edge="test", plugin="other", method="GET",
                 status="404") >= 3


def test_edge_metrics_count_sessions_jobs_and_tasks(stack: Stack) -> None:
    bridge = stack.client()
    psij = bridge.get_edge_client("test").get_plugin("psij")
    tasks = bridge.get_edge_client("test").get_plugin("tasks")
    try:
        with stack.http() as http:
            before = scrape(http, "/test/_edge/metrics")
            jobs = [psij.submit_job({"executable": "/bin/true"}, "local") for _ in range(2)]  # type: ignore[attr-defined]
            failed = psij.submit_job({"executable": "/bin/false"}, "local")  # type: ignore[attr-defined]
            for job_id in [*jobs, failed]:
                psij.wait(job_id, timeout=30, poll=0.2)  # type: ignore[attr-defined]
            uids = tasks.submit_tasks([{"executable": "/bin/true"} for _ in range(4)])  # type: ignore[attr-defined]
            assert set(tasks.wait_tasks(uids, timeout=30).values()) == {"DONE"}  # type: ignore[attr-defined]
            after = scrape(http, "/test/_edge/metrics")
    finally:
        tasks.close()
    assert value(after, "isthmus_edge_jobs", state="DONE") - value(before, "isthmus_edge_jobs", state="DONE") == 2
    assert value(after, "isthmus_edge_jobs", state="FAILED") - value(before, "isthmus_edge_jobs", state="FAILED") == 1
    assert value(after, "isthmus_edge_jobs", state="RUNNING") == 0
    assert value(after, "isthmus_edge_tasks", state="DONE") - value(before, "isthmus_edge_tasks", state="DONE") == 4
    assert value(after, "isthmus_edge_plugin_sessions", plugin="tasks") >= 1
    assert value(after, "isthmus_edge_plugin_sessions", plugin="psij") >= 1
    for plugin in ("sysinfo", "psij", "tasks", "faults"):
        assert value(after, "isthmus_edge_plugin_up", plugin=plugin) == 1, plugin


def test_plugin_errors_and_scheduler_latency(stack: Stack) -> None:
    with stack.http() as http:
        edge_before, bridge_before = scrape(http, "/test/_edge/metrics"), scrape(http)
        assert http.get("/test/faults/raise/boom").status_code == 500  # an exception in a handler
        assert http.get("/test/faults/r/raise/boom").status_code == 500  # the same from a router route
        assert http.get("/test/faults/scheduler/failed").status_code == 502  # a scheduler CLI that fails
        assert http.get("/test/faults/raise/value").status_code == 400  # the caller's fault: not counted
        edge_after, bridge_after = scrape(http, "/test/_edge/metrics"), scrape(http)

    def moved(name: str, **labels: str) -> float:
        return value(edge_after, name, **labels) - value(edge_before, name, **labels)

    assert moved("isthmus_edge_plugin_errors_total", plugin="faults", status="500") == 2
    assert moved("isthmus_edge_plugin_errors_total", plugin="faults", status="502") == 1
    assert moved("isthmus_edge_plugin_errors_total", plugin="faults", status="400") == 0
    assert moved("isthmus_edge_scheduler_query_seconds_count", query="sh") == 1
    assert moved("isthmus_edge_scheduler_query_seconds_sum", query="sh") > 0
    assert value(bridge_after, "isthmus_bridge_plugin_errors_total", edge="test", plugin="faults") - \
        value(bridge_before, "isthmus_bridge_plugin_errors_total", edge="test", plugin="faults") == 3


def test_viewer_and_metrics_tokens_scrape_and_a_metrics_token_reads_nothing_else(stack: Stack) -> None:
    viewer = stack.create_token("viewer", name="grafana-viewer")
    metrics = stack.create_token("metrics", name="prometheus")
    for token in (viewer, metrics):
        with stack.http(token) as http:
            assert value(scrape(http), "isthmus_bridge_edges_connected") == 1
            assert value(scrape(http, "/test/_edge/metrics"), "isthmus_edge_plugin_up", plugin="sysinfo") == 1
    with stack.http(metrics) as http:
        for path in ("/test/sysinfo/homedir", "/edge/list", "/events", "/menu", "/test/_edge/plugins",
                     "/test/_edge/operations", "/bridge/faults/raise/boom"):
            resp = http.get(path)
            assert resp.status_code == 403, (path, resp.status_code, resp.text)
        assert http.post("/test/psij/submit_job/x", json={}).status_code == 403
    with httpx.Client(base_url=stack.url) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/test/_edge/metrics").status_code == 401


def test_openmetrics_is_served_when_asked(stack: Stack) -> None:
    accept = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
    with stack.http() as http:
        for path in ("/metrics", "/test/_edge/metrics"):
            resp = http.get(path, headers={"Accept": accept})
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("application/openmetrics-text")
            assert resp.text.endswith("# EOF\n")


def test_link_totals_never_go_back_when_the_edge_leaves(stack: Stack) -> None:
    with stack.http() as http:
        for _ in range(3):
            http.get("/test/sysinfo/homedir")
        before = scrape(http)
        stack.stop_edge()
        stack.wait_edge(present=False)
        gone = scrape(http)
        stack.start_edge()
        poll_for(lambda: http.get("/test/sysinfo/homedir").status_code == 200, 30, what="edge back")
        back = scrape(http)
    assert value(gone, "isthmus_bridge_edges_connected") == 0
    for name in ("isthmus_bridge_link_frames_total", "isthmus_bridge_link_bytes_total"):
        for direction in ("in", "out"):
            assert value(before, name, direction=direction) <= value(gone, name, direction=direction) \
                < value(back, name, direction=direction), (name, direction)
