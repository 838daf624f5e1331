"""`isthmus tasks run` on the demo-like edge: one command, copies of it, a JSON-lines file, a pool."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack, poll_for

from .conftest import ISTHMUS, Run, client_env


def test_one_command_prints_its_output(as_admin: Run) -> None:
    done = as_admin("tasks", "run", "demo", "--", "/bin/echo", "hello", "-n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello -n\n"
    assert "1 task(s) on demo: 1 DONE" in done.stderr


def test_copies_with_json_summary(as_admin: Run) -> None:
    done = as_admin("tasks", "run", "demo", "--count", "25", "--json", "--", "/bin/sh", "-c", "echo $TASK_UID")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["total"] == 25 and summary["counts"]["DONE"] == 25 and summary["counts"]["FAILED"] == 0
    assert summary["timed_out"] is False and summary["pool"] is None
    assert len(summary["tasks"]) == 0  # more tasks than --show: only failed ones would be detailed


def test_from_file_with_a_failure_exits_1(as_admin: Run, tmp_path: Path) -> None:
    specs = [{"executable": "/bin/echo", "arguments": [str(i)]} for i in range(4)]
    specs.append({"executable": "/bin/sh", "arguments": ["-c", "echo broken >&2; exit 3"]})
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in specs[:3]) + "\n\n" + "\n".join(
        json.dumps(s) for s in specs[3:]) + "\n")
    done = as_admin("tasks", "run", "demo", "--from-file", str(path), "--json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["total"] == 5 and summary["counts"]["DONE"] == 4 and summary["counts"]["FAILED"] == 1
    first = summary["tasks"][0]  # the failed task first, then the others
    assert first["state"] == "FAILED" and first["exit_code"] == 3 and first["stderr"] == "broken\n"
    assert sorted(t["stdout"] for t in summary["tasks"][1:]) == ["0\n", "1\n", "2\n", "3\n"]
    human = as_admin("tasks", "run", "demo", "--from-file", str(path))
    assert human.returncode == 1 and "FAILED (exit code 3): broken" in human.stderr
    assert "5 task(s) on demo: 4 DONE, 1 FAILED" in human.stderr


def test_bad_input_is_refused_before_anything_runs(as_admin: Run, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"executable": "/bin/true"}\n[1, 2]\n')
    bad = as_admin("tasks", "run", "demo", "--from-file", str(path))
    assert bad.returncode == 2 and f"{path}:2: a task is a JSON object" in bad.stderr
    both = as_admin("tasks", "run", "demo", "--from-file", str(path), "--", "/bin/true")
    assert both.returncode == 2 and "either a command" in both.stderr
    no_edge = as_admin("tasks", "run", "nowhere", "--", "/bin/true")
    assert no_edge.returncode == 1 and "edge 'nowhere' is not connected" in no_edge.stderr


def test_run_on_a_pilot_pool(demo: Stack, as_admin: Run) -> None:
    """--pool: the tasks run inside a pilot job's child edge (the pilots plugin, on the simulated scheduler)."""
    pilots = demo.client().get_edge_client("demo").get_plugin("pilots", PilotsClient)
    pilots.create_pool(name="cli", max_size=1, cores=2, walltime=300)
    try:
        missing = as_admin("tasks", "run", "demo", "--pool", "nope", "--", "/bin/true")
        assert missing.returncode == 1 and "no pool 'nope' on edge 'demo' (your pools there: cli)" in missing.stderr
        done = as_admin("tasks", "run", "demo", "--pool", "cli", "--count", "3", "--timeout", "120", "--json", "--",
                        "/bin/sh", "-c", "echo $TASK_UID")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["pool"] == "cli" and summary["counts"]["DONE"] == 3 and len(summary["tasks"]) == 3
        assert {t["pilot"].rpartition(".")[0] for t in summary["tasks"]} == {"demo.cli"}  # <edge>.<pool>.<job>
        again = as_admin("tasks", "run", "demo", "--pool", "cli", "--json", "--", "/bin/sh", "-c", "exit 4")
        assert again.returncode == 1  # counts are this run's, not the pool's three earlier DONE tasks
        assert json.loads(again.stdout)["counts"] == {"PENDING": 0, "RUNNING": 0, "DONE": 0, "FAILED": 1,
                                                      "CANCELLED": 0}
    finally:
        pilots.cancel_pool("cli")
        poll_for(lambda: not [e for e in demo.client().list_edges(view="summary") if e.startswith("demo.cli.")],
                 60, 0.2, what="the pilot's child edge gone")


def test_timeout_cancels_the_rest_and_exits_4(as_admin: Run) -> None:
    started = time.monotonic()
    done = as_admin("tasks", "run", "demo", "--timeout", "1", "--json", "--", "/bin/sleep", "600")
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["timed_out"] is True and time.monotonic() - started < 60


def test_progress_bar_on_a_terminal(demo: Stack, tmp_path: Path) -> None:
    """On a TTY the progress bar (rich) is drawn on stderr; the summary follows it."""
    primary, secondary = pty.openpty()
    env = client_env(tmp_path, ISTHMUS_BRIDGE=demo.url, ISTHMUS_TOKEN=demo.admin_token, TERM="xterm")
    proc = subprocess.Popen([ISTHMUS, "tasks", "run", "demo", "--count", "40", "--", "/bin/true"],
                            stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL, env=env)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the other end closed: the command is done
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
    text = seen.decode(errors="replace")
    assert "40/40" in text and "━" in text  # rich's bar, complete
    assert "40 task(s) on demo: 40 DONE" in text
