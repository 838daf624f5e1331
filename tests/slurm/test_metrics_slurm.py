"""Scheduler query latency on /_edge/metrics, measured against the real Slurm."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from isthmus.testing.stack import Stack


def query_counts(http: httpx.Client) -> dict[str, float]:
    """query -> how many scheduler CLI calls the edge has timed."""
    resp = http.get("/test/_edge/metrics")
    assert resp.status_code == 200, resp.text
    return {s.labels["query"]: s.value for family in text_string_to_metric_families(resp.text)
            for s in family.samples if s.name == "isthmus_edge_scheduler_query_seconds_count"}


def test_scheduler_queries_are_timed_by_command(slurm) -> None:
    config = {"scheduler": "slurm", "plugins": {"queue_info": {"cache_ttl": 0.5, "prefetch": False}}}
    with Stack(plugins=["queue_info"], env=slurm.env, config=config) as s, s.http() as http:
        before = query_counts(http)
        qi = s.client().get_edge_client("test").get_plugin("queue_info")
        qi.get_info(force=True)
        qi.list_all_jobs(force=True)
        after = query_counts(http)
    assert after.get("squeue", 0) - before.get("squeue", 0) == 1
    assert after.get("scontrol", 0) + after.get("sinfo", 0) > before.get("scontrol", 0) + before.get("sinfo", 0)
    assert set(after) <= {"sinfo", "scontrol", "squeue", "sacct", "sacctmgr", "scancel"}
