"""pilots with PSI/J's local executor (pilots are local processes), through real bridge and edge
processes: failure handling, refusals, cancels and bad input. Slurm: tests/slurm/test_pilots_slurm.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from isthmus import ClientError
from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack, poll_for
from tests.plugins.pilots_helpers import local_pilots_stack, pilots_client


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # the pilots run this checkout's isthmus (PYTHONPATH through psij), and import tests' functions by name
    with local_pilots_stack(tmp_path_factory.mktemp("pilots")) as s:
        yield s


@pytest.fixture
def pilots(stack: Stack) -> Iterator[PilotsClient]:
    yield from pilots_client(stack)


def ready(pilots: PilotsClient, pool: str, count: int = 1) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = poll_for(
        lambda: [p for p in pilots.get_pool(pool)["pilots"] if p["state"] == "READY"][:count] or None, 60, 0.2,
        what=f"a ready pilot in {pool}")
    return found


def test_a_task_that_outlives_its_retries_fails_with_the_reason(stack: Stack, pilots: PilotsClient) -> None:
    pilots.create_pool("fragile", max_size=1, retries=0)
    (uid,) = pilots.submit_tasks([{"executable": "/bin/sleep", "arguments": ["60"]}], pool="fragile")
    (pilot,) = ready(pilots, "fragile")
    poll_for(lambda: pilots.task_states([uid])[uid] == "RUNNING", 30, 0.2, what="the task running")
    psij = stack.client().get_edge_client("test").get_plugin("psij")
    psij.cancel_job(pilot["job_id"])  # the pilot job dies under its task
    assert pilots.wait_tasks([uid], timeout=60) == {uid: "FAILED"}
    task = pilots.get_task(uid)
    assert task["attempts"] == 1 and "ended CANCELLED" in task["reason"] and "retries: 0" in task["reason"]


def test_the_task_policy_refuses_at_submission_and_in_the_pilot(pilots: PilotsClient) -> None:
    pilots.create_pool("strict", max_size=1)
    with pytest.raises(ClientError) as err:  # the edge checks the pilots' policy first
        pilots.submit_tasks([{"executable": "/bin/true"}, {"executable": "/opt/not/allowed"}], pool="strict")
    assert err.value.status_code in (403, 422) and "/opt/not/allowed" in str(err.value)
    assert pilots.get_pool("strict")["queued"] == 0
    # what only the pilot can judge (a loader variable) fails the tasks with the pilot's reason
    uids = pilots.submit_tasks([{"executable": "/bin/true", "environment": {"LD_PRELOAD": "/x.so"}}], pool="strict")
    assert pilots.wait_tasks(uids, timeout=60) == {uids[0]: "FAILED"}
    assert "refused by the pilot" in pilots.get_task(uids[0])["reason"]


def test_queued_tasks_cancel_and_the_session_pool_is_the_default(stack: Stack) -> None:
    client = stack.client().get_edge_client("test").get_plugin("pilots", PilotsClient)
    client.create_pool("later", max_size=1)
    mine = stack.client().get_edge_client("test").get_plugin("pilots", PilotsClient, pool="later")
    uids = mine.submit_tasks([{"executable": "/bin/sleep", "arguments": ["30"]}] * 3)  # no pool: the session's
    assert mine.cancel_all_tasks() == 3
    assert set(mine.wait_tasks(uids, timeout=30).values()) == {"CANCELLED"}
    assert [t["state"] for t in mine.list_tasks(state="CANCELLED")] == ["CANCELLED"] * 3
    client.cancel_pool("later")


def test_bad_pools_and_tasks_are_422_naming_the_field(pilots: PilotsClient) -> None:
    for spec, field in (({"max_size": 0}, "max_size"), ({"name": "a.b"}, "name"),
                        ({"min_size": 3, "max_size": 2}, "(spec)"), ({"walltime": "soon"}, "walltime"),
                        ({"max_size": 5000}, "max_size"), ({"colour": "red"}, "colour")):
        with pytest.raises(ClientError) as err:
            pilots.create_pool(**{"name": "bad", **spec})
        assert err.value.status_code == 422
        assert field in [e["field"] for e in err.value.detail["errors"]], (spec, err.value.detail)
    with pytest.raises(ClientError) as err:
        pilots.submit_tasks([{"executable": "/bin/true"}], pool="nope")
    assert err.value.status_code == 404
    pilots.create_pool("shape", max_size=1)
    with pytest.raises(ClientError) as err:
        pilots.submit_tasks([{"arguments": ["x"]}], pool="shape")
    assert err.value.status_code == 422 and err.value.detail["errors"][0]["field"] == "tasks[0]"
    with pytest.raises(ClientError) as err:
        pilots.create_pool("shape", max_size=1)
    assert err.value.status_code == 409


def test_another_user_sees_neither_the_pool_nor_its_tasks(stack: Stack, pilots: PilotsClient) -> None:
    pilots.create_pool("private", max_size=1)
    uids = pilots.submit_tasks([{"executable": "/bin/true"}], pool="private")
    bob = stack.client(stack.create_token("user", principal="bob")).get_edge_client("test").get_plugin(
        "pilots", PilotsClient)
    assert bob.list_pools() == []
    with pytest.raises(ClientError) as err:
        bob.submit_tasks([{"executable": "/bin/true"}], pool="private")
    assert err.value.status_code == 404
    with pytest.raises(ClientError) as err:
        bob.get_task(uids[0])
    assert err.value.status_code == 404
    with pytest.raises(ClientError) as err:
        bob.task_states(uids)  # someone else's uids are unknown, not readable
    assert err.value.status_code == 404


def test_pool_tasks_bring_their_output_and_a_removed_pool_says_gone(stack: Stack, pilots: PilotsClient) -> None:
    bridge = stack.client()
    seen: list[dict[str, Any]] = []
    bridge.register_callback(plugin_name="pilots", topic="pool_status", callback=lambda e, p, t, d: seen.append(d))
    assert bridge.wait_for_events(10)
    pilots.create_pool("outputs", max_size=1)
    echo = [{"executable": "/bin/sh", "arguments": ["-c", f"echo out{i}; echo err{i} >&2"]} for i in range(300)]
    square = [{"function": "tests.plugins.tasks_helpers:square", "args": [i]} for i in range(300)]
    uids = pilots.submit_tasks(echo + square, pool="outputs")
    assert set(pilots.wait_tasks(uids, timeout=120).values()) == {"DONE"}
    for i in (0, 17, 299):  # records collected from the pilot in batches (get_tasks)
        task = pilots.get_task(uids[i])
        assert (task["stdout"], task["stderr"], task["exit_code"]) == (f"out{i}\n", f"err{i}\n", 0)
        assert pilots.get_task(uids[300 + i])["return_value"] == i * i
    assert "has no get_tasks" not in (stack.workdir / "edge.log").read_text(errors="replace")

    pilots.cancel_pool("outputs")
    poll_for(lambda: all(p["name"] != "outputs" for p in pilots.list_pools()), 60, 0.2, what="the pool forgotten")
    gone = poll_for(lambda: [d for d in seen if d.get("name") == "outputs" and d.get("state") == "GONE"] or None,
                    10, 0.1, what="the pool's GONE event")
    assert len(gone) == 1 and gone[0]["pilots"] == [] and gone[0]["queued"] == 0
    assert seen[-1] is gone[0] or all(d.get("name") != "outputs" for d in seen[seen.index(gone[0]) + 1:])
    assert any(d.get("name") == "outputs" and d.get("state") == "ACTIVE" for d in seen)
