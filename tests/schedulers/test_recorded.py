"""Scheduler parsers on recorded outputs: Slurm 22.05 (live-recorded), Slurm 24.05, PBS Pro."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from isthmus.errors import SchedulerError, SchedulerTimeout
from isthmus.schedulers import JobState, NodeState, pbs, slurm
from isthmus.schedulers.base import run_command
from isthmus.schedulers.hostlist import HostlistError, compress, expand

DATA = Path(__file__).parents[1] / "data"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_slurm_22_05_nodes_json_and_text_agree() -> None:
    from_json = slurm.parse_nodes_json(load("slurm/sinfo-22.05-drain.json"))
    from_text = slurm.parse_nodes_text((DATA / "slurm/scontrol-node-22.05-drain.txt").read_text())
    for nodes in (from_json, from_text):
        (node,) = nodes
        assert node.name == "localhost" and node.partitions == ["debug", "long"]
        assert node.state is NodeState.draining  # mixed + DRAIN: still running a job
        assert node.reason == "bad dimm (test)"
        assert node.cpus == 2 and node.cpus_alloc == 1
    idle = slurm.parse_nodes_json(load("slurm/sinfo-22.05.json"))[0]
    assert idle.state in (NodeState.mixed, NodeState.idle, NodeState.allocated) and not idle.not_responding


def test_slurm_22_05_partitions_text() -> None:
    parts = {p.name: p for p in slurm.parse_partitions_text((DATA / "slurm/scontrol-partition-22.05.txt").read_text())}
    assert parts["debug"].default and not parts["long"].default
    assert parts["debug"].max_time is None and parts["long"].max_time == 2 * 86400
    assert parts["long"].default_time == 3600 and parts["debug"].nodes == ["localhost"]


def test_slurm_22_05_jobs() -> None:
    jobs = {j.name: j for j in slurm.parse_squeue_json(load("slurm/squeue-22.05.json"))}
    assert jobs["rec-running"].state is JobState.RUNNING and jobs["rec-running"].nodes == ["localhost"]
    assert jobs["rec-running"].time_limit == 300
    assert jobs["rec-held"].state is JobState.HELD
    done = {j.job_id: j for j in slurm.parse_sacct_json(load("slurm/sacct-22.05.json"))}
    assert done["3"].state is JobState.DONE and done["3"].exit_code == 0
    assert done["1"].state is JobState.CANCELLED


def test_slurm_24_05_nodes_states_gpus_reasons() -> None:
    nodes = {n.name: n for n in slurm.parse_nodes_json(load("slurm/scontrol-node-24.05.json"))}
    assert nodes["c001"].state is NodeState.mixed and nodes["c001"].load == 31.5
    assert nodes["c002"].state is NodeState.drained and nodes["c002"].reason == "memory errors, ticket 4711"
    assert nodes["c003"].state is NodeState.draining
    assert nodes["c004"].state is NodeState.down and nodes["c004"].not_responding
    assert nodes["gpu01"].gpus == 4 and nodes["gpu01"].gpus_alloc == 0
    assert nodes["gpu02"].state is NodeState.maint and nodes["gpu02"].gpus_alloc == 1
    assert nodes["c001"].features == ["rome", "ib"]


def test_slurm_24_05_partitions_and_counts() -> None:
    parts = {p.name: p for p in slurm.parse_partitions_json(load("slurm/scontrol-partition-24.05.json"))}
    nodes = slurm.parse_nodes_json(load("slurm/scontrol-node-24.05.json"))
    slurm.fill_partition_counts(list(parts.values()), nodes)
    cpu = parts["cpu"]
    assert cpu.default and cpu.nodes == ["c001", "c002", "c003", "c004"] and cpu.total_nodes == 4
    assert cpu.max_time == 86400 and cpu.default_time == 3600 and cpu.max_nodes == 4
    assert cpu.idle_nodes == 0  # c002 drained, c004 down: not idle
    assert cpu.idle_cpus == 32  # only c001 (mixed) has free cores
    assert parts["gpu"].state == "drain" and parts["gpu"].max_time is None
    assert parts["gpu"].total_gpus == 8 and parts["gpu"].idle_gpus == 4  # gpu02 is in maintenance
    assert parts["long"].max_time == 7 * 86400


def test_slurm_24_05_jobs() -> None:
    jobs = {j.job_id: j for j in slurm.parse_squeue_json(load("slurm/squeue-24.05.json"))}
    assert jobs["1001"].state is JobState.RUNNING and jobs["1001"].nodes == ["c001", "c003"]
    assert jobs["1001"].num_cpus == 96 and jobs["1001"].time_limit == 86400 and jobs["1001"].exit_code is None
    assert jobs["1002"].state is JobState.PENDING and jobs["1002"].reason == "Resources"
    assert jobs["1002"].time_limit is None and jobs["1002"].num_gpus == 2 and jobs["1002"].start_time is None
    assert jobs["1003"].state is JobState.HELD
    assert jobs["1004"].state is JobState.FAILED and jobs["1004"].exit_code == 3
    done = {j.job_id: j for j in slurm.parse_sacct_json(load("slurm/sacct-24.05.json"))}
    assert done["990"].state is JobState.DONE and done["990"].end_time == 1763790070
    assert done["991"].state is JobState.FAILED and done["991"].exit_code == 137
    assert done["992"].state is JobState.CANCELLED and done["992"].nodes == []


def test_assoc_text() -> None:
    allocs = slurm.parse_assoc_text((DATA / "slurm/sacctmgr-assoc-22.05.txt").read_text())
    by_account = {a.account: a for a in allocs}
    assert by_account["isthmus"].user == "root"
    assert by_account["isthmus"].limits == {"max_jobs": 100, "max_submit_jobs": 200}
    assert by_account["isthmus"].qos == ["normal"]
    text = "hpc|proj1|alice|gpu|normal,high|normal|10|50|2-00:00:00|gres/gpu=8|cpu=512\n"
    (a,) = slurm.parse_assoc_text(text)
    assert a.partition == "gpu" and a.qos == ["normal", "high"] and a.default_qos == "normal"
    assert a.limits == {"max_jobs": 10, "max_submit_jobs": 50, "max_wall": 172800, "group_tres": "gres/gpu=8",
                        "max_tres": "cpu=512"}


@pytest.mark.parametrize(("raw", "expected"), [
    ("IDLE", NodeState.idle), ("idle*", NodeState.idle), ("ALLOCATED", NodeState.allocated),
    ("MIXED+DRAIN", NodeState.draining), ("IDLE+DRAIN", NodeState.drained), ("DRAINED", NodeState.drained),
    ("DOWN*+DRAIN", NodeState.down), ("IDLE+MAINTENANCE", NodeState.maint), ("IDLE+RESERVED", NodeState.reserved),
    ("FUTURE", NodeState.unknown), ("weird", NodeState.unknown), (["ALLOCATED", "COMPLETING"], NodeState.allocated),
])
def test_node_state_mapping(raw, expected) -> None:
    assert slurm.node_state(raw)[0] is expected
    assert slurm.node_state("IDLE*")[1] and slurm.node_state(["DOWN", "NOT_RESPONDING"])[1]


@pytest.mark.parametrize(("raw", "reason", "expected"), [
    ("PENDING", "Priority", JobState.PENDING), ("PENDING", "JobHeldAdmin", JobState.HELD),
    (["RUNNING"], None, JobState.RUNNING), ("COMPLETING", None, JobState.RUNNING),
    ("COMPLETED", None, JobState.DONE), ("TIMEOUT", None, JobState.FAILED), ("NODE_FAIL", None, JobState.FAILED),
    ("CANCELLED by 0", None, JobState.CANCELLED), ("SUSPENDED", None, JobState.HELD), ("BOGUS", None, JobState.UNKNOWN),
])
def test_job_state_mapping(raw, reason, expected) -> None:
    assert slurm.job_state(raw, reason) is expected


def test_backends_map_onto_the_one_vocabulary() -> None:
    """Slurm and PBS states land on ``isthmus.jobstates.JobState`` (never NEW: that one is Isthmus's own)."""
    from isthmus import jobstates

    assert JobState is jobstates.JobState
    for table in (slurm._JOB_STATES, pbs._JOB_STATES):
        assert all(isinstance(s, jobstates.JobState) and s is not JobState.NEW for s in table.values())
    assert {s.value for s in JobState} == {"NEW", "PENDING", "HELD", "RUNNING", "DONE", "FAILED", "CANCELLED",
                                           "UNKNOWN"}
    assert pbs.job_state("F", 271) is JobState.CANCELLED and pbs.job_state("F", 0) is JobState.DONE


def test_durations() -> None:
    assert slurm.parse_duration("UNLIMITED") is None
    assert slurm.parse_duration("30") == 1800
    assert slurm.parse_duration("1:30") == 90
    assert slurm.parse_duration("01:00:00") == 3600
    assert slurm.parse_duration("2-00:00:00") == 172800
    assert slurm.parse_duration("1-12") == 129600


def test_pbs_jobs() -> None:
    jobs = {j.job_id: j for j in pbs.parse_qstat_json(load("pbs/qstat-f.json"))}
    run = jobs["4101.pbs01"]
    assert run.state is JobState.RUNNING and run.nodes == ["n001", "n002"] and run.user == "alice"
    assert run.num_cpus == 32 and run.time_limit == 7200 and run.account == "proj1" and run.partition == "workq"
    assert jobs["4102.pbs01"].state is JobState.PENDING and jobs["4102.pbs01"].num_gpus == 2
    assert "Insufficient" in jobs["4102.pbs01"].reason
    assert jobs["4103.pbs01"].state is JobState.HELD
    assert jobs["4099.pbs01"].state is JobState.FAILED and jobs["4099.pbs01"].exit_code == 2
    assert jobs["4098.pbs01"].state is JobState.DONE and jobs["4098.pbs01"].exit_code == 0


def test_pbs_nodes_and_queues() -> None:
    nodes = {n.name: n for n in pbs.parse_pbsnodes_json(load("pbs/pbsnodes.json"))}
    assert nodes["n001"].state is NodeState.allocated
    assert nodes["n002"].state is NodeState.mixed and nodes["n002"].cpus_alloc == 16
    assert nodes["n003"].state is NodeState.idle and nodes["n003"].memory_mb == 196608
    assert nodes["n004"].state is NodeState.drained and nodes["n004"].reason == "bad DIMM, ticket 17"
    assert nodes["n005"].state is NodeState.down and nodes["n005"].not_responding
    assert nodes["g001"].gpus == 4 and nodes["g001"].partitions == ["gpuq"] and nodes["g001"].memory_mb == 512 * 1024
    queues = {q.name: q for q in pbs.parse_queues_json(load("pbs/qstat-Q.json"), list(nodes.values()))}
    assert set(queues) == {"workq", "gpuq", "oldq"}  # routing queues are not partitions
    assert queues["gpuq"].nodes == ["g001"] and queues["gpuq"].max_nodes == 2 and queues["gpuq"].idle_gpus == 4
    assert queues["workq"].max_time == 86400 and queues["workq"].default_time == 3600
    assert queues["workq"].idle_nodes == 1 and queues["oldq"].state == "inactive"


def test_run_command_errors_are_clear() -> None:
    with pytest.raises(SchedulerError, match="not found on PATH"):
        asyncio.run(run_command(["definitely-not-a-scheduler"]))
    with pytest.raises(SchedulerError, match=r"failed \(exit 3\): oops") as err:
        asyncio.run(run_command(["sh", "-c", "echo oops >&2; exit 3"]))
    assert err.value.stderr == "oops" and err.value.command[0] == "sh"
    with pytest.raises(SchedulerTimeout, match=r"did not answer within 0\.2 s"):
        asyncio.run(run_command(["sleep", "5"], timeout=0.2))


def test_hostlists() -> None:
    assert expand("c[001-003],gpu[1,3]") == ["c001", "c002", "c003", "gpu1", "gpu3"]
    assert expand("rack[1-2]-n[01-02]") == ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]
    assert compress(expand("c[001-480]")) == "c[001-480]"
    for bad in ("c[1-", "c]1[", "c[3-1]", "c[a-b]", "c[1-[2]]"):
        with pytest.raises(HostlistError):
            expand(bad)


def test_detect_picks_from_path(monkeypatch, tmp_path) -> None:
    from isthmus.schedulers.detect import detect

    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect().name == "none"
    for cmd in ("qstat", "pbsnodes"):
        (tmp_path / cmd).write_text("#!/bin/sh\n")
        (tmp_path / cmd).chmod(0o755)
    assert detect().name == "pbs"
    (tmp_path / "sinfo").write_text("#!/bin/sh\n")
    (tmp_path / "sinfo").chmod(0o755)
    assert detect().name == "slurm"
    assert detect("none").name == "none"
    with pytest.raises(LookupError, match="simulator plugin"):
        detect("simulated")
