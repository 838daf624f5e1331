"""The pilots plugin's scaling rule, without I/O: how many pilots a pool wants, which it releases."""

from __future__ import annotations

from isthmus.plugins.pilots.pool import READY, SUBMITTED, Pilot, Pool, to_release, wanted_pilots
from isthmus.plugins.pilots.spec import PoolSpec
from isthmus.types import Principal, Role

OWNER = Principal("alice", Role.user, "alice")


def pool(min_size: int = 0, max_size: int = 3, queued: int = 0) -> Pool:
    p = Pool(PoolSpec(name="p", min_size=min_size, max_size=max_size), OWNER)
    p.queue.extend(range(queued))
    return p


def test_a_pool_grows_with_its_queue_up_to_max_size_and_idles_at_min_size() -> None:
    assert wanted_pilots(pool(), per_pilot=4) == 0
    assert wanted_pilots(pool(min_size=1), per_pilot=4) == 1
    assert wanted_pilots(pool(queued=1), per_pilot=4) == 1
    assert wanted_pilots(pool(queued=5), per_pilot=4) == 2
    assert wanted_pilots(pool(queued=10_000), per_pilot=4) == 3


def test_running_tasks_keep_their_pilots_wanted() -> None:
    p = pool()
    busy = Pilot("j1", "p", state=READY)
    busy.inflight = {"task.1": 1, "task.2": 2}
    p.pilots["j1"] = busy
    assert wanted_pilots(p, per_pilot=2) == 1


def test_only_idle_pilots_past_the_timeout_go_queued_ones_first_and_min_size_stays() -> None:
    p = pool(min_size=1)
    ready = Pilot("ready", "p", state=READY, idle_since=0.0)
    queued = Pilot("queued", "p", state=SUBMITTED, idle_since=0.0)
    fresh = Pilot("fresh", "p", state=READY, idle_since=95.0)
    p.pilots = {x.job_id: x for x in (ready, queued, fresh)}
    assert [x.job_id for x in to_release(p, now=100.0, idle_timeout=10)] == ["queued", "ready"]
    p.pilots.pop("fresh")
    assert [x.job_id for x in to_release(p, now=100.0, idle_timeout=10)] == ["queued"]  # min_size 1 stays
    p.queue.append(1)
    assert to_release(p, now=100.0, idle_timeout=10) == []  # nothing goes while tasks wait


def test_a_dask_pilot_has_its_workers_threads_on_every_node_as_slots() -> None:
    import pytest
    from pydantic import ValidationError

    assert PoolSpec(name="p", cores=4, nodes=3).slots == 4  # without Dask: the first node's cores
    assert PoolSpec(name="p", cores=4, nodes=3, dask=False).dask is None
    spec = PoolSpec(name="p", cores=4, nodes=3, dask=True)
    assert spec.dask is not None and spec.slots == 12
    assert PoolSpec(name="p", cores=4, nodes=3, dask={"threads": 2}).slots == 6
    assert PoolSpec.model_validate(spec.model_dump()) == spec  # what SQLite keeps reads back the same
    for bad in ({"interface": "eth0; rm -rf ~"}, {"threads": 0}, {"workers": 2}, "yes"):
        with pytest.raises(ValidationError):
            PoolSpec(name="p", dask=bad)
