"""A pool with Dask on, on the real Slurm: each pilot job starts a Dask scheduler on its first node
and a worker per node (an ``srun`` step), over mutual TLS with a certificate of its own, and the
pool's function tasks run on those workers inside the job. The single-node Slurm has two CPUs:
one pilot of one core, cancelled (``squeue`` and ``ps`` checked) before the test ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import isthmus
from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack, poll_for
from tests.plugins.pilots_helpers import (
    SAME_CODE_PSIJ,
    assert_dask_locked,
    pilot_directory,
    pilot_processes,
    pilots_client,
    same_code_env,
)
from tests.plugins.tasks_helpers import dask_view
from tests.slurm.test_pilots_slurm import ready_pilots, squeue

POOL = {"cores": 1, "walltime": 900, "partition": "debug", "idle_timeout": 60}


@pytest.fixture(scope="module")
def stack(slurm: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = {"scheduler": "slurm", "plugins": {"psij": SAME_CODE_PSIJ, "pilots": {"tick": 0.2}}}
    with Stack(plugins=["psij", "pilots"], env={**slurm.env, **same_code_env()}, config=config,
               workdir=tmp_path_factory.mktemp("pilots-dask")) as s:
        yield s


@pytest.fixture
def pilots(stack: Stack) -> Iterator[PilotsClient]:
    yield from pilots_client(stack)


def test_function_tasks_run_on_the_pilots_dask_workers_inside_its_job(stack: Stack, pilots: PilotsClient) -> None:
    pilots.create_pool("dsk", max_size=1, dask=True, **POOL)
    echo = {"executable": "/bin/sh", "arguments": ["-c", "echo $SLURM_JOB_ID"]}
    uids = pilots.submit_tasks([pilots.function_task(dask_view)] * 8 + [echo], pool="dsk")
    (pilot,) = ready_pilots(pilots, "dsk", 1, timeout=240)
    job = pilot["native_id"]
    assert set(pilots.wait_tasks(uids, timeout=240).values()) == {"DONE"}
    records = [pilots.get_task(uid) for uid in uids]
    assert {r["pilot"] for r in records} == {pilot["edge"]}
    views = [r["return_value"] for r in records[:8]]
    assert {v["job"] for v in views} == {job}  # inside the pilot's Slurm job (its srun step)
    assert len({v["worker"] for v in views}) == 1 and views[0]["worker"].startswith("tls://")
    assert {v["isthmus"] for v in views} == {isthmus.__file__}  # the pilot runs this checkout's code
    assert records[8]["stdout"].strip() == job  # executables run on the workers too

    directory = pilot_directory(stack, pilot["job_id"])
    processes = pilot_processes(directory)
    roles = [" ".join(p.cmdline()) for p in processes]
    assert any(r.startswith("srun --overlap") and "daskcluster worker" in r for r in roles), roles
    assert any("daskcluster scheduler" in r for r in roles) and any(" edge " in r for r in roles), roles
    assert {v["pid"] for v in views} <= {p.pid for p in processes}
    assert_dask_locked(directory, processes)

    pilots.cancel_pool("dsk")
    poll_for(lambda: not squeue(job), 60, 0.5, what="the pilot job gone from squeue")
    poll_for(lambda: not [p for p in processes if p.is_running()], 60, 0.5, what="no process of the pilot left")
