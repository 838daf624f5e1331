"""The workflows plugin on the bridge, two real edges (one on the real Slurm, one local).

The single-node Slurm is shared with other tests (two CPUs): waits for Slurm jobs are bounded
generously, since a job may queue behind others.

The `xgfabric` example of docs/workflows.md runs end to end with real jobs and transfers,
survives a SIGKILL of the bridge, a cycle is a 422, and a cancel removes the Slurm job.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from isthmus.errors import ClientError
from isthmus.plugins.pilots.client import PilotsClient
from isthmus.plugins.workflows.client import WorkflowsClient
from isthmus.testing.stack import Stack, poll_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"
STAGING = {"roots": ["/tmp"], "shared_read": True}


def xgfabric_document() -> str:
    """The example as docs/workflows.md shows it (the first ```yaml block after its heading)."""
    text = DOCS.read_text()
    block = text.split("## The xgfabric example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return block


class TwoEdges:
    """A Stack (bridge with `workflows` + the Slurm edge `hpc`) and a second, local edge `lab`."""

    def __init__(self, stack: Stack, lab_config: dict[str, Any]) -> None:
        self.stack = stack
        self.lab_config = lab_config
        self.lab: subprocess.Popen[bytes] | None = None

    def start_lab(self) -> None:
        workdir = self.stack.workdir
        assert workdir is not None
        (workdir / "lab.yaml").write_text(yaml.safe_dump(self.lab_config))
        env = {**os.environ, "XDG_STATE_HOME": str(workdir / "lab-state"), "XDG_CONFIG_HOME": str(workdir / "xdg"),
               "ISTHMUS_EDGE_TOKEN": self.stack.edge_token, "PYTHONUNBUFFERED": "1"}
        env.pop("SLURM_CONF", None)
        with open(workdir / "lab.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.lab = subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge",
                                         f"ws://127.0.0.1:{self.stack.port}", "--name", "lab", "--config",
                                         str(workdir / "lab.yaml"), "--plugins", "psij,staging"],
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                        start_new_session=True)
        self.wait_edges()

    def wait_edges(self) -> None:
        def both() -> bool:
            edges = httpx.get(f"{self.stack.url}/edge/list", params={"view": "summary"},
                              headers=self.stack.headers, timeout=2).json()["edges"]
            return {"hpc", "lab"} <= set(edges)

        poll_for(both, 60, 0.2, what="edges hpc and lab connected")

    def kill_bridge(self) -> None:
        proc = self.stack.bridge_proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=15)

    def close(self) -> None:
        if self.lab is not None and self.lab.poll() is None:
            self.lab.send_signal(signal.SIGTERM)
            try:
                self.lab.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.lab.kill()
                self.lab.wait()


@pytest.fixture(scope="module")
def fabric(slurm, tmp_path_factory) -> Iterator[tuple[TwoEdges, str]]:
    hpc = {"scheduler": "slurm",
           "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}, "staging": STAGING, "pilots": {"tick": 0.2},
                       "workflows": {"edge_wait": 120, "poll_max": 1.0}}}
    lab = {"scheduler": "none", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}, "staging": STAGING}}
    stack = Stack(plugins=["psij", "tasks", "staging", "pilots"], edge="hpc", env=slurm.env, config=hpc,
                  bridge_plugins=["workflows"], workdir=tmp_path_factory.mktemp("wf"))
    with stack:
        two = TwoEdges(stack, lab)
        try:
            two.start_lab()
            token = stack.create_token("user", name="alice")
            yield two, token
        finally:
            two.close()


def workflows(two: TwoEdges, token: str) -> WorkflowsClient:
    return two.stack.client(token).get_edge_client("bridge").get_plugin("workflows", WorkflowsClient)


def squeue_ids(slurm_env: dict[str, str]) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                         env={**os.environ, **slurm_env}, timeout=30).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def test_xgfabric_survives_a_bridge_kill(fabric, slurm, tmp_path) -> None:
    two, token = fabric
    client = workflows(two, token)
    work = tmp_path / "xg"
    events: list[dict[str, Any]] = []
    client.register_callback(lambda e, p, t, d: events.append(d), topic="workflow_status")
    wid = client.submit(xgfabric_document(), {"n": 3, "work": str(work)})

    def submitted() -> dict[str, Any] | None:
        steps = client.status(wid)["steps"]
        sim = steps["simulate"]
        return steps if sim["state"] == "RUNNING" and (sim["handle"] or {}).get("submitted") else None

    before = poll_for(submitted, 240, 0.3, what="the simulations submitted")
    poll_for(lambda: any(d.get("step") == "simulate" and d["state"] == "RUNNING" for d in events), 10,
             what="a live workflow_status event")
    assert all(d["workflow"] == wid for d in events)
    assert len(before["simulate"]["handle"]["uids"]) == 3
    two.kill_bridge()
    two.stack.start_bridge()  # the same state directory: the workflow resumes
    two.wait_edges()
    again = workflows(two, token)
    final = again.wait(wid, timeout=400)
    assert final["state"] == "DONE", final
    steps = final["steps"]
    assert [steps[s]["state"] for s in final["order"]] == ["DONE"] * 6
    # followed after the restart, not submitted again: the same task session and uids, each run once
    assert steps["simulate"]["attempt"] == 1
    assert steps["simulate"]["handle"] == before["simulate"]["handle"]
    assert steps["simulate"]["outputs"]["uids"] == before["simulate"]["handle"]["uids"]
    assert sorted((work / "hpc" / "runs.log").read_text().split()) == ["0", "1", "2"]
    assert steps["fetch"]["outputs"]["job_id"] == before["fetch"]["outputs"]["job_id"]  # done before: kept
    # the simulations ran as Slurm jobs (srun) and wrote one result each
    sims = steps["simulate"]["outputs"]["stdout"]
    assert sorted(sims) == [str(work / "hpc" / "out" / f"sim_{i}.dat") for i in range(3)]
    # the transfer's checksums: what landed on lab hashes like what the simulations wrote
    moved = steps["results"]["outputs"]
    assert moved["files"] == [str(work / "lab" / "results" / f"sim_{i}.dat") for i in range(3)]
    for i, path in enumerate(moved["files"]):
        source = work / "hpc" / "out" / f"sim_{i}.dat"
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert moved["sha256"][path] == digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    # sum over inputs 1..100 is 5050; simulation k multiplies by k+1: 5050 * (1+2+3)
    assert steps["train"]["outputs"]["stdout"].strip() == str(5050 * 6)
    assert steps["evaluate"]["outputs"]["stdout"].strip() == "ok"
    assert steps["fetch"]["outputs"]["native_id"]  # a real local job on lab


def test_a_cycle_is_422_and_nothing_runs(fabric) -> None:
    two, token = fabric
    client = workflows(two, token)
    before = client.list()["workflows"]
    doc = {"steps": {"a": {"kind": "job", "edge": "hpc", "needs": ["b"], "spec": {"executable": "/bin/true"}},
                     "b": {"kind": "job", "edge": "hpc", "needs": ["a"], "spec": {"executable": "/bin/true"}}}}
    with pytest.raises(ClientError) as info:
        client.submit(doc)
    assert info.value.status_code == 422
    assert info.value.detail["errors"][0]["field"] == "steps.a.needs"
    with pytest.raises(ClientError) as info:
        client.submit({"steps": {"t": {"kind": "tasks", "edge": "lab", "tasks": [{"executable": "/bin/true"}]}}})
    assert info.value.status_code == 422 and info.value.detail["errors"] == [
        {"field": "steps.t.edge", "problem": "edge 'lab' has no tasks plugin, which a tasks step needs"}]
    assert client.list()["workflows"] == before


def test_an_unknown_pool_is_422_naming_the_step_and_nothing_is_submitted(fabric) -> None:
    two, token = fabric
    client = workflows(two, token)
    mine = two.stack.client(token).get_edge_client("hpc").get_plugin("pilots", PilotsClient)
    theirs = two.stack.client().get_edge_client("hpc").get_plugin("pilots", PilotsClient)  # the admin's
    spec = {"min_size": 0, "max_size": 1, "cores": 1, "walltime": 900, "partition": "debug"}  # no pilot until tasks
    mine.create_pool("alice-pool", **spec)
    theirs.create_pool("admin-pool", **spec)
    try:
        psij = two.stack.client(token).get_edge_client("hpc").get_plugin("psij")
        before, jobs_before = client.list()["workflows"], {j["job_id"] for j in psij.list_jobs()}
        task = {"executable": "/bin/echo", "arguments": ["never"]}

        def doc(pool: str) -> dict[str, Any]:
            return {"params": {"pool": "alice-pool"}, "steps": {
                "first": {"kind": "job", "edge": "hpc", "spec": {"executable": "/bin/true"}},
                "pooled": {"kind": "tasks", "edge": "hpc", "needs": ["first"], "pool": pool, "tasks": [task]}}}

        for pool, problem in (("nope", "edge 'hpc' has no pool named 'nope' (create it with create_pool)"),
                              ("admin-pool", "edge 'hpc' has no pool named 'admin-pool' (create it with create_pool)")):
            for call in (client.submit, client.validate):
                with pytest.raises(ClientError) as info:
                    call(doc(pool))
                assert info.value.status_code == 422, info.value
                assert info.value.detail["errors"] == [{"field": "steps.pooled.pool", "problem": problem}]
        assert client.validate(doc("${params.pool}"))["valid"]  # the caller's own pool, named by a parameter
        assert client.list()["workflows"] == before  # nothing stored, nothing started
        assert {j["job_id"] for j in psij.list_jobs()} == jobs_before  # not even the job step before it
        assert mine.get_pool("alice-pool")["queued"] == 0 and not mine.get_pool("alice-pool")["pilots"]
    finally:
        mine.cancel_pool("alice-pool")
        theirs.cancel_pool("admin-pool")


def test_cancel_removes_the_slurm_job(fabric, slurm) -> None:
    two, token = fabric
    client = workflows(two, token)
    doc = {"name": "long", "steps": {
        "wait": {"kind": "job", "edge": "hpc", "spec": {"executable": "/bin/sleep", "arguments": ["600"],
                                                          "attributes": {"duration": 900}}},
        "after": {"kind": "job", "edge": "lab", "needs": ["wait"], "spec": {"executable": "/bin/true"}}}}
    wid = client.submit(doc)

    def native() -> str | None:
        step = client.status(wid)["steps"]["wait"]
        return step["handle"] and step["handle"].get("job_id")

    job_id = poll_for(native, 60, 0.3, what="the job submitted")
    psij = two.stack.client(token).get_edge_client("hpc").get_plugin("psij")
    slurm_id = poll_for(lambda: psij.get_job_status(job_id)["native_id"], 60, 0.3, what="a Slurm job id")
    poll_for(lambda: slurm_id in squeue_ids(slurm.env), 60, 0.3, what="the job in squeue")
    answer = client.cancel(wid)
    assert answer["state"] == "CANCELLED"
    poll_for(lambda: slurm_id not in squeue_ids(slurm.env), 60, 0.5, what="the Slurm job gone from squeue")
    status = client.status(wid)
    assert status["steps"]["wait"]["state"] == "CANCELLED" and status["steps"]["after"]["state"] == "CANCELLED"
    assert psij.wait(job_id, timeout=60)["state"] == "CANCELLED"


def test_retries_timeouts_and_a_gone_edge(fabric, tmp_path) -> None:
    two, token = fabric
    client = workflows(two, token)
    marker = tmp_path / "tried-once"
    doc = {"name": "flaky", "params": {"marker": str(marker)}, "steps": {
        # fails the first time, then succeeds: one retry
        "flaky": {"kind": "job", "edge": "lab", "retries": 1, "spec": {
            "executable": "/bin/sh", "arguments": ["-c", "test -f ${params.marker} || { touch ${params.marker}; "
                                                         "exit 3; }; echo second"]}},
        # on Slurm, long enough for the lab edge to be killed and come back meanwhile
        "hold": {"kind": "job", "edge": "hpc", "needs": ["flaky"], "spec": {
            "executable": "/bin/sleep", "arguments": ["4"], "attributes": {"duration": 120}}},
        "after": {"kind": "job", "edge": "lab", "needs": ["hold"], "spec": {"executable": "/bin/echo",
                                                                          "arguments": ["back"]}}}}
    wid = client.submit(doc)
    poll_for(lambda: client.status(wid)["steps"]["hold"]["state"] == "RUNNING", 240, 0.3, what="hold running")
    assert two.lab is not None
    two.lab.send_signal(signal.SIGKILL)
    two.lab.wait(timeout=15)
    poll_for(lambda: client.status(wid)["steps"]["hold"]["state"] == "DONE", 240, 0.3, what="hold done")
    # waiting for its edge, not failed
    poll_for(lambda: client.status(wid)["steps"]["after"]["state"] == "RUNNING", 10, 0.2, what="after waiting")
    assert client.status(wid)["state"] == "RUNNING"
    two.start_lab()
    final = client.wait(wid, timeout=120)
    assert final["state"] == "DONE", final
    flaky = final["steps"]["flaky"]
    assert flaky["attempt"] == 2 and flaky["outputs"]["stdout"] == "second\n"
    assert final["steps"]["after"]["outputs"]["stdout"] == "back\n"

    slow = {"name": "slow", "steps": {"slow": {"kind": "job", "edge": "lab", "timeout": 2, "spec": {
        "executable": "/bin/sleep", "arguments": ["60"]}}}}
    wid = client.submit(slow)
    final = client.wait(wid, timeout=60)
    assert final["state"] == "FAILED" and "timed out after 2 s" in final["steps"]["slow"]["error"]
    job_id = final["steps"]["slow"]["handle"]["job_id"]
    psij = two.stack.client(token).get_edge_client("lab").get_plugin("psij")
    assert psij.wait(job_id, timeout=30)["state"] == "CANCELLED"  # the timed-out job was cancelled


def test_a_task_batch_in_a_pilot_pool(fabric, slurm) -> None:
    two, token = fabric
    client = workflows(two, token)
    pilots = two.stack.client(token).get_edge_client("hpc").get_plugin("pilots", PilotsClient)
    pilots.create_pool("wf", min_size=1, max_size=1, cores=1, walltime=900, partition="debug", idle_timeout=60)
    try:
        doc = {"name": "pooled", "steps": {"inside": {
            "kind": "tasks", "edge": "hpc", "pool": "wf", "count": 4,
            "task": {"executable": "/bin/sh", "arguments": ["-c", "echo $SLURM_JOB_ID"]}}}}
        final = client.wait(client.submit(doc), timeout=400)
        assert final["state"] == "DONE", final
        pilot_jobs = {p["native_id"] for p in pilots.get_pool("wf")["pilots"]}
        seen = set(final["steps"]["inside"]["outputs"]["stdout"])
        assert len(final["steps"]["inside"]["outputs"]["uids"]) == 4 and seen and seen <= pilot_jobs
    finally:
        pilots.cancel_pool("wf")
    poll_for(lambda: not (pilot_jobs & squeue_ids(slurm.env)), 60, 0.5, what="the pilot jobs gone")
