"""psij through PSI/J's Slurm executor on the real Slurm."""

from __future__ import annotations

import subprocess

import pytest

from isthmus.testing.stack import Stack, poll_for


@pytest.fixture(scope="module")
def slurm_psij(slurm, tmp_path_factory):
    config = {"scheduler": "slurm", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}}}
    env = {**slurm.env, "ISTHMUS_SITE_SECRET": "site-secret-4711"}  # must not reach jobs
    with Stack(plugins=["psij"], env=env, config=config, workdir=tmp_path_factory.mktemp("sp")) as s:
        bridge = s.client()
        yield bridge.get_edge_client("test").get_plugin("psij"), bridge, s


def test_echo_on_slurm(slurm_psij) -> None:
    psij, bridge, _ = slurm_psij
    seen: list[str] = []
    bridge.register_callback(topic="job_status", callback=lambda e, p, t, d: seen.append((d["job_id"], d["state"])))
    assert bridge.wait_for_events(10)
    job_id = psij.submit_job({"executable": "/bin/echo", "arguments": ["hello"],
                              "attributes": {"queue_name": "debug", "duration": 60}})
    final = psij.wait(job_id, timeout=90)
    assert final["executor"] == "slurm" and final["state"] == "DONE" and final["exit_code"] == 0
    assert final["native_id"].isdigit()
    assert psij.tail(job_id)[0] == "hello\n"
    poll_for(lambda: (job_id, "DONE") in seen, 10, what="DONE event")
    states = [s for j, s in seen if j == job_id]
    assert states[0] == "PENDING" and states[-1] == "DONE" and "RUNNING" in states


def test_failure_and_custom_attributes_on_slurm(slurm_psij) -> None:
    psij, _, _ = slurm_psij
    job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "exit 5"],
                              "attributes": {"custom_attributes": {"slurm.job-name": "isthmus-fail"}}})
    final = psij.wait(job_id, timeout=90)
    assert final["state"] == "FAILED" and final["exit_code"] == 5


def test_cancel_on_slurm(slurm_psij) -> None:
    psij, _, _ = slurm_psij
    job_id = psij.submit_job({"executable": "/bin/sleep", "arguments": ["600"],
                              "attributes": {"queue_name": "long", "duration": "00:20:00"}})
    poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 60, 0.5, what="job RUNNING")
    native = psij.get_job_status(job_id)["native_id"]
    psij.cancel_job(job_id)
    final = psij.wait(job_id, timeout=90)
    assert final["state"] == "CANCELLED"

    def gone() -> bool:
        out = subprocess.run(["squeue", "-h", "-j", native, "-o", "%T"], capture_output=True, text=True).stdout
        return out.strip() in ("", "CANCELLED")

    poll_for(gone, 30, 0.5, what="the Slurm job gone")
    # the job's wrapper names the job id in its command line; it and its children must be gone
    poll_for(lambda: subprocess.run(["pgrep", "-f", job_id], capture_output=True, text=True).stdout.strip() == "",
             30, 0.5, what="the job's processes gone")


def test_edge_restart_reattaches_slurm_job(slurm, tmp_path) -> None:
    config = {"scheduler": "slurm", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}}}
    with Stack(plugins=["psij"], env=slurm.env, config=config, workdir=tmp_path / "w") as s:
        psij = s.client().get_edge_client("test").get_plugin("psij")
        job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "sleep 4; echo survived"],
                                  "attributes": {"queue_name": "debug", "duration": 120}})
        poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 60, 0.5, what="job RUNNING")
        s.kill_edge()
        s.wait_edge(present=False)
        s.start_edge()
        again = s.client().get_edge_client("test").get_plugin("psij")
        assert job_id in {j["job_id"] for j in again.list_jobs()}
        final = again.wait(job_id, timeout=90)
        assert final["state"] == "DONE" and final["exit_code"] == 0
        assert again.tail(job_id)[0] == "survived\n"


def test_clean_environment_on_slurm(slurm_psij) -> None:
    """The batch job (and an srun step in it) sees the allow-listed variables and the spec's, never the
    edge's token: the script says --export=NONE and exports the clean environment itself."""
    psij, _, stack = slurm_psij
    job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "env; echo STEP; srun /usr/bin/env"],
                              "environment": {"JOB_VAR": "from-spec"},
                              "attributes": {"queue_name": "debug", "duration": 60}})
    final = psij.wait(job_id, timeout=90)
    out = psij.tail(job_id)[0]
    assert final["state"] == "DONE", (final, psij.tail(job_id))
    batch, step = out.split("STEP\n")
    for part in (batch, step):
        lines = part.splitlines()
        assert not [line for line in lines if line.startswith("ISTHMUS_")]
        assert stack.edge_token not in part and "site-secret-4711" not in part
        assert "JOB_VAR=from-spec" in lines and any(line.startswith("PATH=") for line in lines)
        assert any(line.startswith("SLURM_JOB_ID=") for line in lines)  # Slurm's own variables are there


def test_newlines_stay_inside_arguments_on_slurm(slurm_psij) -> None:
    """Arguments are shell-quoted in the batch script: a newline is part of the argument, not a new line."""
    psij, _, _ = slurm_psij
    job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "echo one\necho 'two'"],
                              "attributes": {"queue_name": "debug", "duration": 60}})
    assert psij.wait(job_id, timeout=90)["state"] == "DONE"
    assert psij.tail(job_id)[0] == "one\ntwo\n"
