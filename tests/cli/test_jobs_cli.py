"""`isthmus jobs` on the demo-like edge: the real console script against a real bridge and edge."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from isthmus import ClientError
from isthmus.plugins.psij.client import PsijClient
from isthmus.testing.stack import Stack, free_port, poll_for

from .conftest import ISTHMUS, Run, client_env


def psij(demo: Stack) -> PsijClient:
    return demo.client().get_edge_client("demo").get_plugin("psij", PsijClient)


def submit(as_admin: Run, *command: str, options: tuple[str, ...] = ()) -> str:
    done = as_admin("jobs", "submit", "demo", *options, "--", *command)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert len(job_id) == 12 and job_id.isalnum()
    return job_id


def test_submit_ls_show_and_json(demo: Stack, as_admin: Run) -> None:
    done = as_admin("jobs", "submit", "demo", "--name", "cli-hello", "--time", "00:05:00", "--json", "--",
                    "/bin/echo", "hello", "--not-an-option")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    assert as_admin("jobs", "wait", "demo", job_id, "--timeout", "60").returncode == 0

    listed = json.loads(as_admin("jobs", "ls", "demo", "--json").stdout)["jobs"]
    mine = next(j for j in listed if j["job_id"] == job_id)
    assert mine["state"] == "DONE" and mine["name"] == "cli-hello" and mine["edge"] == "demo"
    assert mine["arguments"] == ["hello", "--not-an-option"]
    everywhere = json.loads(as_admin("jobs", "ls", "--json").stdout)["jobs"]  # every edge running psij
    assert job_id in {j["job_id"] for j in everywhere}

    table = as_admin("jobs", "ls", "demo")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == \
        ["EDGE", "JOB", "STATE", "EXIT", "SUBMITTED", "COMMAND"]
    assert any(job_id in line and "DONE" in line for line in table.stdout.splitlines())

    shown = json.loads(as_admin("jobs", "show", "demo", job_id, "--json").stdout)
    assert shown["state"] == "DONE" and shown["exit_code"] == 0 and "stdout" not in shown
    assert [h["state"] for h in shown["history"]] == ["NEW", "PENDING", "RUNNING", "DONE"]
    text = as_admin("jobs", "show", "demo", job_id).stdout
    command = next(line for line in text.splitlines() if line.startswith("command:"))
    assert "state:      DONE" in text and command.endswith("/echo hello --not-an-option")  # the resolved path

    assert as_admin("jobs", "tail", "demo", job_id).stdout == "hello --not-an-option\n"
    missing = as_admin("jobs", "show", "demo", "000000000000")
    assert missing.returncode == 1 and "no job 000000000000" in missing.stderr


def test_submit_options_reach_the_job_record(demo: Stack, as_admin: Run) -> None:
    job_id = submit(as_admin, "/bin/echo", "placed", options=("--executor", "local", "--nodes", "1", "--queue",
                                                              "cpu", "--time", "00:02:30", "--name", "placed"))
    assert as_admin("jobs", "wait", "demo", job_id, "--timeout", "60").returncode == 0
    shown = json.loads(as_admin("jobs", "show", "demo", job_id, "--json").stdout)
    assert shown["executor"] == "local" and shown["name"] == "placed" and shown["state"] == "DONE"
    attributes = shown["attributes"]
    assert (attributes["queue_name"], attributes["node_count"], attributes["duration"]) == ("cpu", 1, 150)
    assert {k: v for k, v in psij(demo).get_job_status(job_id).items() if k in shown} == shown  # the API's record
    listed = json.loads(as_admin("jobs", "ls", "demo", "--json").stdout)["jobs"]
    assert next(j for j in listed if j["job_id"] == job_id)["attributes"] == attributes
    # the executor named is the one asked for: an unknown one is refused by the edge, not replaced by auto
    unknown = as_admin("jobs", "submit", "demo", "--executor", "nosuch", "--", "/bin/true")
    assert unknown.returncode == 1 and "no executor 'nosuch'" in unknown.stderr, unknown.stderr


def test_ls_state_filter(demo: Stack, as_admin: Run) -> None:
    failed = submit(as_admin, "/bin/sh", "-c", "exit 2")
    done = submit(as_admin, "/bin/true")
    for job_id in (failed, done):
        as_admin("jobs", "wait", "demo", job_id, "--timeout", "60")
    only_failed = json.loads(as_admin("jobs", "ls", "demo", "--state", "failed", "--json").stdout)["jobs"]
    assert failed in {j["job_id"] for j in only_failed} and {j["state"] for j in only_failed} == {"FAILED"}
    both = json.loads(as_admin("jobs", "ls", "--state", "DONE,FAILED", "--json").stdout)["jobs"]
    assert {failed, done} <= {j["job_id"] for j in both} and {j["state"] for j in both} <= {"DONE", "FAILED"}
    assert [j["job_id"] for j in psij(demo).list_jobs(state="FAILED", limit=1)] == [failed]  # newest first
    with pytest.raises(ClientError) as err:
        psij(demo).list_jobs(state="FINISHED")
    assert err.value.status_code == 422 and "state must be one of" in str(err.value)
    bad = as_admin("jobs", "ls", "demo", "--state", "FINISHED")
    assert bad.returncode == 1 and "state must be one of" in bad.stderr


def test_tail_follow_prints_output_while_the_job_runs(demo: Stack, as_admin: Run, tmp_path) -> None:
    release = tmp_path / "release"
    job_id = submit(as_admin, "/bin/sh", "-c", f"echo first; echo oops >&2; while [ ! -e {release} ]; do "
                    "sleep 0.1; done; echo second")
    env = client_env(tmp_path, ISTHMUS_BRIDGE=demo.url, ISTHMUS_TOKEN=demo.admin_token)
    follower = subprocess.Popen([ISTHMUS, "jobs", "tail", "demo", job_id, "--follow"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"  # arrives while the job still waits for the release
        assert psij(demo).get_job_status(job_id)["state"] == "RUNNING" and follower.poll() is None
        release.touch()
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0 and out == "second\n" and err == "oops\n"
    assert psij(demo).get_job_status(job_id)["state"] == "DONE"


def test_cancel_then_wait_exits_3(demo: Stack, as_admin: Run) -> None:
    job_id = submit(as_admin, "/bin/sleep", "600")
    poll_for(lambda: psij(demo).get_job_status(job_id)["state"] == "RUNNING", 30, 0.2, what="job RUNNING")
    cancelled = as_admin("jobs", "cancel", "demo", job_id)
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    waited = as_admin("jobs", "wait", "demo", job_id, "--timeout", "60", "--json")
    assert waited.returncode == 3 and json.loads(waited.stdout)["state"] == "CANCELLED"
    again = as_admin("jobs", "cancel", "demo", job_id)
    assert again.returncode == 0 and "already ended: CANCELLED" in again.stdout


def test_wait_exit_codes_for_failure_and_timeout(demo: Stack, as_admin: Run) -> None:
    failing = submit(as_admin, "/bin/sh", "-c", "exit 7")
    waited = as_admin("jobs", "wait", "demo", failing, "--timeout", "60")
    assert waited.returncode == 1 and waited.stdout.strip() == f"job {failing} FAILED (exit code 7)"
    slow = submit(as_admin, "/bin/sleep", "600")
    started = time.monotonic()
    timed = as_admin("jobs", "wait", "demo", slow, "--timeout", "1")
    assert timed.returncode == 4 and "still" in timed.stderr and time.monotonic() - started < 30
    assert as_admin("jobs", "cancel", "demo", slow).returncode == 0


def test_bridge_unreachable_exits_69(as_admin: Run) -> None:
    gone = as_admin("jobs", "ls", env={"ISTHMUS_BRIDGE": f"http://127.0.0.1:{free_port()}"})
    assert gone.returncode == 69 and "cannot connect" in gone.stderr and "Traceback" not in gone.stderr


def test_usage_errors_exit_2(as_admin: Run) -> None:
    no_command = as_admin("jobs", "submit", "demo")
    assert no_command.returncode == 2 and "Missing argument" in no_command.stderr
    help_text = as_admin("jobs", "--help").stdout
    for name in ("submit", "ls", "show", "tail", "cancel", "wait"):
        assert name in help_text
