"""queue_info logic: shared single-flight cache, own-jobs-only cancel, allocation from the environment."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from isthmus import schedulers
from isthmus.plugins.queue_info.cache import SharedCache
from isthmus.plugins.queue_info.config import QueueInfoConfig
from isthmus.plugins.queue_info.plugin import PluginQueueInfo, allocation_from_env
from isthmus.plugins.queue_info.submitters import executors_for, submitter
from isthmus.schedulers.pbs import PBSPro, parse_pbsnodes_json, parse_qstat_json, parse_queues_json

DATA = Path(__file__).parents[1] / "data" / "pbs"


class RecordedPBS(PBSPro):
    """PBS Pro answering from recorded outputs (no PBS server exists in Debian)."""

    def __init__(self, user: str) -> None:
        super().__init__()
        import json

        self.raw_jobs = json.loads((DATA / "qstat-f.json").read_text())
        self.raw_nodes = json.loads((DATA / "pbsnodes.json").read_text())
        self.raw_queues = json.loads((DATA / "qstat-Q.json").read_text())
        for job in self.raw_jobs["Jobs"].values():  # the recorded owner "alice" is the edge's user here
            job["Job_Owner"] = job["Job_Owner"].replace("alice", user)
        self.calls = 0
        self.cancelled: list[str] = []

    async def nodes(self):
        self.calls += 1
        await asyncio.sleep(0.05)
        return parse_pbsnodes_json(self.raw_nodes)

    async def partitions(self):
        return parse_queues_json(self.raw_queues, await self.nodes())

    async def jobs(self, user=None, partition=None, include_finished=False):
        jobs = parse_qstat_json(self.raw_jobs)
        return [j for j in jobs if (user is None or j.user == user) and (include_finished or not j.state.final)]

    async def cancel(self, job_id):
        self.cancelled.append(job_id)


@pytest.fixture
def pbs_client():
    system = RecordedPBS(getpass.getuser())
    schedulers.use(system)
    app = FastAPI()
    PluginQueueInfo(app)
    client = TestClient(app)
    sid = client.post("/queue_info/register_session").json()["sid"]
    yield client, sid, system
    schedulers.use(None)


def test_pbs_queues_jobs_and_no_allocations(pbs_client) -> None:
    client, sid, _ = pbs_client
    assert client.get("/queue_info/backend").json() == {"backend": "pbs"}
    parts = {p["name"]: p for p in client.get(f"/queue_info/get_info/{sid}").json()["partitions"]}
    assert parts["gpuq"]["total_gpus"] == 4 and parts["workq"]["max_time"] == 86400
    mine = client.get(f"/queue_info/list_all_jobs/{sid}").json()["jobs"]
    assert {j["job_id"] for j in mine} == {"4101.pbs01", "4102.pbs01"}  # bob's job is not the edge user's
    everyone = client.get(f"/queue_info/list_all_jobs/{sid}", params={"user": "*"}).json()["jobs"]
    assert "4103.pbs01" in {j["job_id"] for j in everyone}
    queued = client.get(f"/queue_info/list_jobs/{sid}", params={"queue": "gpuq"}).json()["jobs"]
    assert [j["state"] for j in queued] == ["PENDING"]
    assert client.get(f"/queue_info/list_allocations/{sid}").json()["allocations"] == []
    assert client.get(f"/queue_info/list_jobs/{sid}").status_code == 422


def test_cancel_only_own_jobs(pbs_client) -> None:
    client, sid, system = pbs_client
    refused = client.post(f"/queue_info/cancel_job/{sid}", json={"job_id": "4103.pbs01"})
    assert refused.status_code == 403 and "bob" in refused.json()["detail"]
    assert client.post(f"/queue_info/cancel_job/{sid}", json={"job_id": "4101.pbs01"}).status_code == 200
    assert system.cancelled == ["4101.pbs01"]
    assert client.post(f"/queue_info/cancel_job/{sid}", json={"job_id": "nope"}).status_code == 404


def test_cache_is_shared_and_single_flight(pbs_client) -> None:
    _client, _sid, system = pbs_client
    cache = SharedCache(ttl=60)

    async def many() -> list:
        return await asyncio.gather(*(cache.get("k", system.nodes) for _ in range(20)))

    results = asyncio.run(many())
    assert system.calls == 1 and cache.fetches == 1 and all(r == results[0] for r in results)
    asyncio.run(cache.get("k", system.nodes))
    assert system.calls == 1
    asyncio.run(cache.get("k", system.nodes, force=True))
    assert system.calls == 2


def test_cache_failure_reaches_every_waiter() -> None:
    cache = SharedCache(ttl=60)

    async def boom():
        await asyncio.sleep(0.01)
        raise RuntimeError("scheduler down")

    async def many():
        return await asyncio.gather(*(cache.get("k", boom) for _ in range(5)), return_exceptions=True)

    results = asyncio.run(many())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_a_missing_scheduler_cli_is_503(monkeypatch) -> None:
    from isthmus.schedulers.slurm import Slurm

    monkeypatch.setenv("PATH", "/nonexistent")
    schedulers.use(Slurm())
    try:
        app = FastAPI()
        PluginQueueInfo(app)
        client = TestClient(app)
        sid = client.post("/queue_info/register_session").json()["sid"]
        resp = client.get(f"/queue_info/get_info/{sid}")
        assert resp.status_code == 503 and "sinfo not found" in resp.json()["detail"]["message"]
    finally:
        schedulers.use(None)


def test_allocation_from_env(tmp_path) -> None:
    assert allocation_from_env({}) is None
    slurm = allocation_from_env({"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "c[001-002]",
                                 "SLURM_JOB_PARTITION": "cpu", "SLURM_JOB_NUM_NODES": "2"})
    assert slurm == {"scheduler": "slurm", "job_id": "77", "partition": "cpu", "account": None,
                     "nodes": ["c001", "c002"], "num_nodes": 2, "cpus_on_node": 0}
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n001\nn001\nn002\n")
    pbs = allocation_from_env({"PBS_JOBID": "5.pbs", "PBS_NODEFILE": str(nodefile), "PBS_QUEUE": "workq"})
    assert pbs["nodes"] == ["n001", "n002"] and pbs["partition"] == "workq"


def test_only_scheduler_executors_name_scheduler_jobs(tmp_path) -> None:
    for local in ("local", "none", "simulated"):
        assert executors_for(local) == ()
    assert executors_for("slurm") == ("slurm",) and set(executors_for("pbs")) == {"pbs", "pbspro"}
    assert submitter(tmp_path / "missing.sqlite", "1", ("slurm",)) is None
    (tmp_path / "broken.sqlite").write_text("not a database")
    assert submitter(tmp_path / "broken.sqlite", "1", ("slurm",)) is None


def test_psij_records_are_found_beside_psij(tmp_path, monkeypatch) -> None:
    from isthmus.config import AppConfig
    from isthmus.runtime.host import PluginHost
    from isthmus.sdk.plugin import registry

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    alone = PluginHost(AppConfig(state_dir=tmp_path / "state"), ["queue_info"], name="t")
    alone.load()
    assert alone.records["queue_info"].plugin._psij_database() == tmp_path / "state" / "psij" / "jobs.sqlite"
    both = PluginHost(AppConfig(state_dir=tmp_path / "state2",
                                plugins={"psij": {"state_dir": str(tmp_path / "elsewhere")}}),
                      ["psij", "queue_info"], name="t")
    both.load()
    psij = both.records["psij"].plugin
    try:
        assert both.records["queue_info"].plugin._psij_database() == psij.store.path == \
            tmp_path / "elsewhere" / "jobs.sqlite"
    finally:
        psij.store.close()
        for name in ("psij", "queue_info"):
            registry.unregister(name)
    configured = PluginQueueInfo(FastAPI())
    configured.config = QueueInfoConfig(psij_database=str(tmp_path / "x.sqlite"))
    assert configured._psij_database() == tmp_path / "x.sqlite"


def test_config_contract() -> None:
    assert QueueInfoConfig().cache_ttl == 10.0 and QueueInfoConfig().prefetch is True
    assert QueueInfoConfig().psij_database is None
    with pytest.raises(ValueError):
        QueueInfoConfig(cache_ttl=-1)
    with pytest.raises(ValueError):
        QueueInfoConfig(ttl=3)  # the old name is not accepted
