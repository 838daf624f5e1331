"""`isthmus jobs` against an edge on the real Slurm (the `slurm` fixture of tests/slurm)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus.plugins.psij.client import PsijClient
from isthmus.testing.slurm import SlurmInfo
from isthmus.testing.stack import Stack, poll_for

from .conftest import ISTHMUS, Run, client_env


@pytest.fixture(scope="module")
def slurm_edge(slurm: SlurmInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = {"scheduler": "slurm", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}}}
    with Stack(plugins=["psij"], edge="hpc", env=slurm.env, config=config,
               workdir=tmp_path_factory.mktemp("slurm-cli")) as stack:
        yield stack


@pytest.fixture
def on_slurm(slurm_edge: Stack, isthmus: Run, tmp_path: Path) -> Run:
    """``isthmus`` after `isthmus login` to the Slurm edge's bridge: no flags, no variables."""
    assert isthmus("login", "--bridge", slurm_edge.url, input=slurm_edge.admin_token).returncode == 0
    return isthmus


def submit(run: Run, *args: str) -> str:
    done = run("jobs", "submit", "hpc", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def squeue_state(slurm: SlurmInfo, native_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", native_id, "-o", "%T"], capture_output=True, text=True,
                          env={**os.environ, **slurm.env}, timeout=30).stdout.strip()


def test_submit_ls_tail_wait_on_slurm(slurm: SlurmInfo, slurm_edge: Stack, on_slurm: Run, tmp_path: Path) -> None:
    release = tmp_path / "release"
    job_id = submit(on_slurm, "--queue", "debug", "--time", "60", "--name", "cli-slurm", "--", "/bin/sh", "-c",
                    f"echo one; while [ ! -e {release} ]; do sleep 0.2; done; echo two")
    psij = slurm_edge.client().get_edge_client("hpc").get_plugin("psij", PsijClient)
    env = client_env(tmp_path)  # the same user (XDG_CONFIG_HOME): the login holds the bridge and token
    follower = subprocess.Popen([ISTHMUS, "jobs", "tail", "hpc", job_id, "--follow"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(240, follower.kill)  # a line that never comes fails the test, not the run
    watchdog.start()
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "one\n"  # arrives while the job waits for the release
        assert follower.poll() is None, "tail --follow ended before the job did"
        native = psij.get_job_status(job_id)["native_id"]
        assert squeue_state(slurm, native) == "RUNNING"  # Slurm itself says the job is still running
        # the edge's record follows Slurm by polling; the job cannot end before the release
        poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 60, 0.5, what="job RUNNING")
        release.touch()
        out, err = follower.communicate(timeout=180)
    finally:
        watchdog.cancel()
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
    assert follower.returncode == 0, err
    assert out == "two\n"
    waited = on_slurm("jobs", "wait", "hpc", job_id, "--timeout", "120", "--json")
    assert waited.returncode == 0, waited.stderr
    final = json.loads(waited.stdout)
    assert final["state"] == "DONE" and final["executor"] == "slurm" and final["native_id"].isdigit()
    listed = json.loads(on_slurm("jobs", "ls", "--json").stdout)["jobs"]
    mine = next(j for j in listed if j["job_id"] == job_id)
    assert mine["edge"] == "hpc" and mine["name"] == "cli-slurm" and mine["state"] == "DONE"


def test_failed_job_wait_exits_1_on_slurm(on_slurm: Run) -> None:
    job_id = submit(on_slurm, "--queue", "debug", "--time", "60", "--", "/bin/sh", "-c", "exit 5")
    waited = on_slurm("jobs", "wait", "hpc", job_id, "--timeout", "120")
    assert waited.returncode == 1 and waited.stdout.strip() == f"job {job_id} FAILED (exit code 5)"
    failed = json.loads(on_slurm("jobs", "ls", "hpc", "--state", "FAILED", "--json").stdout)["jobs"]
    assert job_id in {j["job_id"] for j in failed}


def test_cancel_on_slurm(slurm: SlurmInfo, slurm_edge: Stack, on_slurm: Run) -> None:
    job_id = submit(on_slurm, "--queue", "long", "--time", "00:20:00", "--", "/bin/sleep", "600")
    psij = slurm_edge.client().get_edge_client("hpc").get_plugin("psij", PsijClient)
    poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 90, 0.5, what="job RUNNING")
    native = psij.get_job_status(job_id)["native_id"]
    assert on_slurm("jobs", "cancel", "hpc", job_id).returncode == 0
    waited = on_slurm("jobs", "wait", "hpc", job_id, "--timeout", "120")
    assert waited.returncode == 3 and "CANCELLED" in waited.stdout

    poll_for(lambda: squeue_state(slurm, native) in ("", "CANCELLED"), 60, 0.5, what="the Slurm job gone from squeue")
