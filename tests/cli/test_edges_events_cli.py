"""`isthmus edges` (plugins, health) and `isthmus events` (a snapshot, and --follow)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path

from isthmus.plugins.psij.client import PsijClient
from isthmus.testing.stack import Stack

from .conftest import DEMO_CONFIG, ISTHMUS, Run, client_env


def test_edges_table_json_and_health(demo: Stack, as_admin: Run) -> None:
    listed = json.loads(as_admin("edges", "--json").stdout)["edges"]
    (edge,) = listed
    assert edge["edge"] == "demo" and {"psij", "tasks", "cluster", "simulator"} <= set(edge["plugins"])
    assert edge["plugin_errors"] == {} and "cluster" not in edge  # no per-edge call without --health
    health = json.loads(as_admin("edges", "--health", "--json").stdout)["edges"][0]["cluster"]
    assert health["nodes"] == 504 and sum(health["by_severity"].values()) == 504
    table = as_admin("edges", "--health").stdout.splitlines()
    assert table[0].split() == ["EDGE", "HOST", "UP", "PLUGINS", "HEALTH"]
    assert table[1].startswith("demo") and "504 nodes" in table[1]
    assert "no edges connected that match" in as_admin("edges", "--name", "hpc*").stdout
    assert json.loads(as_admin("edges", "--plugin", "psij", "--json").stdout)["edges"][0]["edge"] == "demo"


def test_edges_show_a_plugin_that_failed(tmp_path: Path, isthmus: Run) -> None:
    config = {**DEMO_CONFIG, "plugins": {**DEMO_CONFIG["plugins"], "psij": {"retention_days": "soon"}}}
    with Stack(plugins=["sysinfo", "psij"], edge="broken", config=config, workdir=tmp_path / "w") as stack:
        env = {"ISTHMUS_BRIDGE": stack.url, "ISTHMUS_TOKEN": stack.admin_token}
        edge = json.loads(isthmus("edges", "--json", env=env).stdout)["edges"][0]
        assert set(edge["plugin_errors"]) == {"psij"} and "retention_days" in edge["plugin_errors"]["psij"]
        assert "1 plugin error(s): psij" in isthmus("edges", env=env).stdout
        no_pools = isthmus("tasks", "run", "broken", "--pool", "gpu", "--", "/bin/true", env=env)
        assert no_pools.returncode == 1 and "edge 'broken' has no pilot pools" in no_pools.stderr
        no_tasks = isthmus("tasks", "run", "broken", "--", "/bin/true", env=env)
        assert no_tasks.returncode == 1 and "does not run the tasks plugin (it runs: psij, sysinfo)" in no_tasks.stderr


def test_events_snapshot_holds_a_jobs_states(demo: Stack, as_admin: Run) -> None:
    psij = demo.client().get_edge_client("demo").get_plugin("psij", PsijClient)
    job_id = psij.submit_job({"executable": "/bin/true"})
    psij.wait(job_id, timeout=60)
    done = as_admin("events", "--topic", "job_status", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(e["topic"] == "notification" and e["data"]["topic"] == "job_status" for e in events)
    states = [e["data"]["data"]["state"] for e in events if e["data"]["data"]["job_id"] == job_id]
    assert states == ["PENDING", "RUNNING", "DONE"]
    later = as_admin("events", "--topic", "job_status", "--json", "--since", str(events[-1]["id"]))
    assert later.returncode == 0 and later.stdout == ""
    text = as_admin("events", "--edge", "demo", "--topic", "job_status").stdout
    assert f'demo/psij  job_status  {{"job_id":"{job_id}","state":"DONE"' in text


def test_events_follow_prints_new_events(demo: Stack, tmp_path: Path) -> None:
    env = client_env(tmp_path, ISTHMUS_BRIDGE=demo.url, ISTHMUS_TOKEN=demo.admin_token)
    follower = subprocess.Popen([ISTHMUS, "events", "--follow", "--json", "--topic", "job_status"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    stdout = follower.stdout
    assert stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()

    def states_of(job_id: str) -> list[str]:
        seen: list[str] = []
        while "DONE" not in seen:
            event = json.loads(lines.get(timeout=60))
            if event["data"]["data"]["job_id"] == job_id:
                seen.append(event["data"]["data"]["state"])
        return seen

    try:
        psij = demo.client().get_edge_client("demo").get_plugin("psij", PsijClient)
        first = psij.submit_job({"executable": "/bin/true"})
        assert states_of(first) == ["PENDING", "RUNNING", "DONE"]  # replayed or live: the stream is open now
        second = psij.submit_job({"executable": "/bin/true"})  # only a live stream can show this one
        assert states_of(second) == ["PENDING", "RUNNING", "DONE"] and follower.poll() is None
    finally:
        follower.terminate()
        follower.wait(timeout=15)
