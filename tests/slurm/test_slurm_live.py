"""The scheduler layer and queue_info against the real Slurm, through real bridge and edge processes."""

from __future__ import annotations

import asyncio
import getpass
import subprocess

import pytest

from isthmus import ClientError
from isthmus.schedulers import JobState
from isthmus.schedulers.slurm import Slurm
from isthmus.testing.stack import Stack
from tests.slurm.conftest import wait_until


def sinfo_counts() -> dict[str, tuple[int, int]]:
    """partition -> (nodes, cpus) as sinfo prints them."""
    out = subprocess.run(["sinfo", "-h", "-o", "%R %D %C"], capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in out.splitlines():
        name, nodes, cpus = line.split()
        counts[name] = (int(nodes), int(cpus.split("/")[3]))
    return counts


def test_backend_reads_the_live_cluster(slurm) -> None:
    system = Slurm()
    parts = {p.name: p for p in asyncio.run(system.partitions())}
    assert set(parts) == {"debug", "long"} and parts["debug"].default
    for name, (nodes, cpus) in sinfo_counts().items():
        assert parts[name].total_nodes == nodes and parts[name].total_cpus == cpus
    (node,) = asyncio.run(system.nodes())
    assert node.name == "localhost" and node.cpus > 0


@pytest.fixture(scope="module")
def qi_stack(slurm):
    with Stack(plugins=["queue_info"], env=slurm.env, config={"scheduler": "slurm",
                                                            "plugins": {"queue_info": {"cache_ttl": 0.5}}}) as s:
        yield s


def test_queue_info_partitions_equal_sinfo(qi_stack) -> None:
    qi = qi_stack.client().get_edge_client("test").get_plugin("queue_info")
    assert type(qi).__name__ == "QueueInfoClient"
    assert qi.backend() == "slurm"
    assert qi.job_allocation() is None
    info = qi.get_info(force=True)
    parts = {p["name"]: p for p in info["partitions"]}
    for name, (nodes, cpus) in sinfo_counts().items():
        assert (parts[name]["total_nodes"], parts[name]["total_cpus"]) == (nodes, cpus)
        assert parts[name]["idle_cpus"] <= cpus


def test_job_appears_normalized_then_done(qi_stack, sbatch) -> None:
    qi = qi_stack.client().get_edge_client("test").get_plugin("queue_info")
    job_id = sbatch("-p", "debug", "-J", "qi-short", "--wrap", "sleep 3")
    job = wait_until(lambda: next((j for j in qi.list_jobs("debug", force=True) if j["job_id"] == job_id), None),
                     30, "job listed")
    assert job["state"] in ("PENDING", "RUNNING") and job["user"] == getpass.getuser()
    assert any(j["job_id"] == job_id for j in qi.list_all_jobs(force=True))
    assert not any(j["job_id"] == job_id for j in qi.list_jobs("long", force=True))
    wait_until(lambda: asyncio.run(Slurm().job(job_id)).state is JobState.DONE, 60, "job DONE")


def test_cancel_job(qi_stack, sbatch) -> None:
    qi = qi_stack.client().get_edge_client("test").get_plugin("queue_info")
    job_id = sbatch("-p", "long", "-J", "qi-cancel", "-t", "10", "--wrap", "sleep 600")
    wait_until(lambda: any(j["job_id"] == job_id for j in qi.list_all_jobs(force=True)), 30, "job listed")
    assert qi.cancel_job(job_id)["status"] == "cancel requested"
    wait_until(lambda: asyncio.run(Slurm().job(job_id)).state is JobState.CANCELLED, 60, "job CANCELLED")
    with pytest.raises(ClientError) as err:
        qi.cancel_job("99999999")
    assert err.value.status_code in (404, 502)


def test_allocations_equal_sacctmgr(qi_stack) -> None:
    qi = qi_stack.client().get_edge_client("test").get_plugin("queue_info")
    out = subprocess.run(["sacctmgr", "-P", "-n", "show", "assoc", f"user={getpass.getuser()}", "format=account"],
                         capture_output=True, text=True, check=True).stdout.split()
    allocations = qi.list_allocations(force=True)
    assert sorted(a["account"] for a in allocations) == sorted(out)
    isthmus = next(a for a in allocations if a["account"] == "isthmus")
    assert isthmus["limits"]["max_jobs"] == 100


def test_viewer_cannot_cancel(qi_stack, sbatch) -> None:
    viewer = qi_stack.create_token("viewer")
    with qi_stack.http(viewer) as http:
        sid = qi_stack.client().get_edge_client("test").get_plugin("queue_info").sid
        assert http.post(f"/test/queue_info/cancel_job/{sid}", json={"job_id": "1"}).status_code == 403
