"""A pool with Dask on, with PSI/J's local executor: each pilot (a local process) starts its own
Dask scheduler and one worker over mutual TLS, and its tasks run there. Slurm:
tests/slurm/test_pilots_dask_slurm.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import isthmus
from isthmus.plugins.pilots import daskcluster
from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack, poll_for
from tests.plugins.pilots_helpers import (
    assert_dask_locked,
    local_pilots_stack,
    pilot_directory,
    pilot_processes,
    pilots_client,
)
from tests.plugins.tasks_helpers import dask_view


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_pilots_stack(tmp_path_factory.mktemp("pilots-dask")) as s:
        yield s


@pytest.fixture
def pilots(stack: Stack) -> Iterator[PilotsClient]:
    yield from pilots_client(stack)


def test_a_dask_pool_runs_its_tasks_on_the_pilots_own_tls_cluster(stack: Stack, pilots: PilotsClient) -> None:
    pool = pilots.create_pool("dl", max_size=1, cores=1, dask={"threads": 2})
    assert pool["spec"]["dask"] == {"threads": 2, "interface": None}
    uids = pilots.submit_tasks([pilots.function_task(dask_view)] * 6 + [{"executable": "/bin/echo",
                                                                          "arguments": ["on dask"]}], pool="dl")
    assert set(pilots.wait_tasks(uids, timeout=180).values()) == {"DONE"}
    records = [pilots.get_task(uid) for uid in uids]
    (pilot,) = pilots.get_pool("dl")["pilots"]
    directory = pilot_directory(stack, pilot["job_id"])
    processes = pilot_processes(directory)
    roles = [" ".join(p.cmdline()) for p in processes]
    assert any(" edge " in r for r in roles) and any("daskcluster scheduler" in r for r in roles)
    assert any("daskcluster worker" in r for r in roles)
    address = assert_dask_locked(directory, processes)
    views = [r["return_value"] for r in records[:6]]
    assert len({v["worker"] for v in views}) == 1  # local executor: one node, one worker
    assert views[0]["worker"].startswith("tls://") and views[0]["worker"] != address
    assert {v["isthmus"] for v in views} == {isthmus.__file__}  # the pilot runs this checkout's code
    assert {v["job"] for v in views} == {None}
    assert {v["pid"] for v in views} <= {p.pid for p in processes}  # the worker is one of the pilot's processes
    assert records[6]["stdout"] == "on dask\n"

    pilots.cancel_pool("dl")
    poll_for(lambda: not [p for p in processes if p.is_running()], 60, 0.3, what="every pilot process gone")
    poll_for(lambda: not (directory / daskcluster.KEY).exists(), 30, 0.3, what="the pilot's Dask key removed")


def test_dask_true_is_a_default_cluster_and_unknown_dask_keys_are_422(pilots: PilotsClient) -> None:
    from isthmus import ClientError

    with pytest.raises(ClientError) as err:
        pilots.create_pool("bad", dask={"workers": 3})
    assert err.value.status_code == 422
    assert any("dask" in e["field"] for e in err.value.detail["errors"]), err.value.detail
    pool = pilots.create_pool("plain", dask=True, cores=2, nodes=1)
    assert pool["spec"]["dask"] == {"threads": None, "interface": None}
    pilots.cancel_pool("plain")


def test_the_dask_processes_die_with_the_pilots_edge(stack: Stack, pilots: PilotsClient) -> None:
    """Even when nothing cancels the job: kill -9 of the pilot's child edge takes its Dask cluster along."""
    pilots.create_pool("crash", min_size=1, max_size=1, cores=1, dask=True)
    (pilot,) = poll_for(lambda: [p for p in pilots.get_pool("crash")["pilots"] if p["state"] == "READY"], 120, 0.3,
                        what="a ready pilot")
    processes = pilot_processes(pilot_directory(stack, pilot["job_id"]))
    (edge,) = [p for p in processes if "edge" in p.cmdline()]
    assert len(processes) >= 4  # the edge, the scheduler, the nanny and its worker
    edge.kill()
    poll_for(lambda: not [p for p in processes if p.is_running()], 60, 0.3, what="every pilot process gone")
    pilots.cancel_pool("crash")
