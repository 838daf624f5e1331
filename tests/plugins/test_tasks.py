"""The tasks plugin with real pools: local processes and a real Dask LocalCluster."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from isthmus import ClientError
from isthmus.plugins.tasks.config import TasksConfig
from isthmus.plugins.tasks.states import TaskState, advance
from isthmus.plugins.tasks.wire import compact, expand
from isthmus.testing.stack import Stack, poll_for
from tests.conftest import support_env

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


def env() -> dict[str, str]:
    base = support_env()
    base["PYTHONPATH"] = os.pathsep.join([ROOT, base["PYTHONPATH"]])  # tests.plugins.tasks_helpers importable
    return base


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    config = {"plugins": {"tasks": {"output_tail": 64}}}
    with Stack(plugins=["tasks"], env=env(), config=config, workdir=tmp_path_factory.mktemp("tasks")) as s:
        yield s


@pytest.fixture
def tasks(stack):
    client = stack.client().get_edge_client("test").get_plugin("tasks")
    yield client
    client.close()


def test_functions_by_name_and_pickled(tasks) -> None:
    uids = tasks.submit_tasks([{"function": "tests.plugins.tasks_helpers:square", "args": [i]} for i in range(200)])
    states = tasks.wait_tasks(uids, timeout=60)
    assert set(states.values()) == {"DONE"}
    assert tasks.get_task(uids[7])["return_value"] == 49
    uid = tasks.submit_function(lambda a, b=2: a ** b, 3, b=3)  # not importable: travels pickled
    tasks.wait_tasks([uid], timeout=30)
    assert tasks.get_task(uid)["return_value"] == 27
    assert tasks.get_task(uid)["spec"]["function"] == "<pickled function>"


def test_executables_with_output_bounded(tasks) -> None:
    uids = tasks.submit_tasks([{"executable": "/bin/sh", "arguments": ["-c", f"echo out{i}; echo err{i} >&2"]}
                               for i in range(20)])
    assert set(tasks.wait_tasks(uids, timeout=60).values()) == {"DONE"}
    task = tasks.get_task(uids[3])
    assert task["stdout"] == "out3\n" and task["stderr"] == "err3\n" and task["exit_code"] == 0
    big = tasks.submit_tasks([{"executable": "/bin/sh", "arguments": ["-c", "yes | head -c 100000"]}])
    tasks.wait_tasks(big, timeout=30)
    assert len(tasks.get_task(big[0])["stdout"]) == 64  # output_tail


def test_failures_surface_per_task(tasks) -> None:
    uids = tasks.submit_tasks([
        {"executable": "/bin/sh", "arguments": ["-c", "exit 4"]},
        {"function": "tests.plugins.tasks_helpers:boom", "args": ["kaput"]},
        {"executable": "/bin/sleep", "arguments": ["30"], "timeout": 0.5},
        {"function": "tests.plugins.tasks_helpers:slow", "args": [30], "timeout": 0.5},
        {"executable": "/usr/bin/no-such-binary"},  # allowed by allowed_executables, but not there
        {"function": "no.such.module:thing"},
        {"function": "tests.plugins.tasks_helpers:square", "args": [3]},
    ])
    states = tasks.wait_tasks(uids, timeout=60)
    assert [states[u] for u in uids] == ["FAILED"] * 6 + ["DONE"]
    details = [tasks.get_task(u) for u in uids]
    assert details[0]["exit_code"] == 4
    assert details[1]["exception"] == "RuntimeError: kaput"
    assert "timed out" in details[2]["exception"] and "timed out" in details[3]["exception"]
    assert "cannot run" in details[4]["exception"]
    assert "ModuleNotFoundError" in details[5]["exception"]


def test_cancel_pending_running_and_all(tasks) -> None:
    running = tasks.submit_tasks([{"executable": "/bin/sleep", "arguments": ["60"]} for _ in range(8)])
    poll_for(lambda: all(t["state"] == "RUNNING" for t in tasks.list_tasks() if t["uid"] in running[:2]), 20,
             what="sleepers running")
    assert tasks.cancel_task(running[0]) == 1
    assert tasks.cancel_all_tasks() >= 7
    states = tasks.wait_tasks(running, timeout=30)
    assert set(states.values()) == {"CANCELLED"}
    with pytest.raises(ClientError) as err:
        tasks.cancel_task("task.nope")
    assert err.value.status_code == 404


def test_batch_events_and_wait_without_events(stack) -> None:
    bridge = stack.client()
    events: dict[str, int] = {"task_status": 0, "task_status_batch": 0}
    bridge.register_callback(plugin_name="tasks", callback=lambda e, p, t, d: events.__setitem__(t, events[t] + 1))
    assert bridge.wait_for_events(10)
    client = bridge.get_edge_client("test").get_plugin("tasks")
    uids = client.submit_tasks([{"function": "operator:add", "args": [i, i]} for i in range(5000)])
    assert len(uids) == 5000 and len(set(uids)) == 5000
    client.wait_tasks(uids, timeout=60)
    poll_for(lambda: events["task_status_batch"] > 0, 5, what="batch events")
    assert events["task_status_batch"] + events["task_status"] < 200, "bursts must be coalesced"
    # a client without an event stream still waits correctly (long-poll fallback)
    from isthmus.plugins.tasks.client import TasksClient

    plain = TasksClient(bridge._http, "test", "tasks", bridge=None)
    plain.register_session()
    uids = plain.submit_tasks([{"executable": "/bin/sh", "arguments": ["-c", "sleep 1"]}])
    assert plain.wait_tasks(uids, timeout=30) == {uids[0]: "DONE"}
    plain.close()


def test_task_counts_sum_the_callers_sessions(stack) -> None:
    from isthmus.plugins.tasks.client import TasksClient

    ann, bob = stack.create_token("user", principal="ann"), stack.create_token("user", principal="bob")

    def counts(token: str) -> dict[str, int]:
        with stack.http(token) as http:
            resp = http.get("/test/tasks/task_counts")
            resp.raise_for_status()
            return dict(resp.json()["counts"])

    before = {"ann": counts(ann), "bob": counts(bob), "admin": counts(stack.admin_token)}
    sleep = {"executable": "/bin/sleep", "arguments": ["60"]}
    one, two = (stack.client(ann).get_edge_client("test").get_plugin("tasks", TasksClient) for _ in range(2))
    try:
        uids = one.submit_tasks([sleep] * 2) + two.submit_tasks([sleep])  # two sessions of one user
        poll_for(lambda: set(one.task_states(uids[:2]).values()) | set(two.task_states(uids[2:]).values())
                 == {"RUNNING"}, 20, 0.1, what="ann's three sleepers running")
        assert counts(ann)["RUNNING"] == before["ann"]["RUNNING"] + 3
        assert counts(bob) == before["bob"], "another user's tasks are not counted"
        assert counts(stack.admin_token)["RUNNING"] == before["admin"]["RUNNING"] + 3
        one.cancel_all_tasks()
        two.cancel_all_tasks()
        one.wait_tasks(uids[:2], timeout=30)
        two.wait_tasks(uids[2:], timeout=30)
        after = counts(ann)
        assert after["RUNNING"] == before["ann"]["RUNNING"]
        assert after["CANCELLED"] == before["ann"]["CANCELLED"] + 3
    finally:
        one.close()
        two.close()


def test_safety(stack) -> None:
    viewer = stack.create_token("viewer")
    with stack.http(viewer) as http:
        sid = stack.client().get_edge_client("test").get_plugin("tasks").sid
        resp = http.post(f"/test/tasks/submit_tasks/{sid}", json={"tasks": [{"function": "os:getcwd"}]})
        assert resp.status_code == 403


def test_function_policies(tmp_path) -> None:
    config = {"plugins": {"tasks": {"allow_pickled_functions": False, "allowed_functions": ["operator:*"]}}}
    with Stack(plugins=["tasks"], config=config, workdir=tmp_path / "w") as s:
        client = s.client().get_edge_client("test").get_plugin("tasks")
        assert client.wait_tasks(client.submit_tasks([{"function": "operator:neg", "args": [2]}]), timeout=30)
        with pytest.raises(ClientError) as err:
            client.submit_function(lambda: 1)
        assert err.value.status_code == 403 and "pickled" in str(err.value)
        with pytest.raises(ClientError) as err:
            client.submit_tasks([{"function": "os:system", "args": ["true"]}])
        assert err.value.status_code == 403 and "allowed_functions" in str(err.value)
        with pytest.raises(ClientError) as err:
            client.submit_tasks([{"executable": "/bin/true", "function": "operator:neg"}, {"timeout": -1}])
        assert err.value.status_code == 422 and len(err.value.detail["errors"]) == 2


@pytest.mark.slow
def test_dask_local_cluster(tmp_path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # a user may only name a scheduler the admin listed (dask_addresses)
        config = {"plugins": {"tasks": {"output_tail": 64, "dask_addresses": [cluster.scheduler_address]}}}
        with Stack(plugins=["tasks"], env=env(), config=config, workdir=tmp_path / "w") as stack:
            client = stack.client().get_edge_client("test").get_plugin("tasks", backend="dask",
                                                                          address=cluster.scheduler_address)
            uids = client.submit_tasks([{"function": "operator:mul", "args": [i, 3]} for i in range(300)])
            uids += client.submit_tasks([{"executable": "/bin/sh", "arguments": ["-c", "exit 2"]},
                                         {"function": "operator:truediv", "args": [1, 0]}])
            states = client.wait_tasks(uids, timeout=120)
            assert [states[u] for u in uids[:300]] == ["DONE"] * 300
            assert states[uids[300]] == "FAILED" and client.get_task(uids[300])["exit_code"] == 2
            assert "ZeroDivisionError" in client.get_task(uids[301])["exception"]
            assert client.get_task(uids[10])["return_value"] == 30
            slow = client.submit_tasks([{"function": "tests.plugins.tasks_helpers:slow", "args": [0.2]}] * 4)
            assert client.cancel_all_tasks() >= 1
            assert set(client.wait_tasks(slow, timeout=60).values()) <= {"CANCELLED", "DONE"}
            client.close()
            with pytest.raises(ClientError) as err:
                stack.client().get_edge_client("test").get_plugin("tasks", backend="dask")
            assert err.value.status_code == 422 and "address" in str(err.value)


def test_rhapsody_backend(stack) -> None:
    """Chunks run as Rhapsody ComputeTasks on its concurrent backend (rhapsody-py is a test dependency)."""
    client = stack.client().get_edge_client("test").get_plugin("tasks", backend="rhapsody")
    uids = client.submit_tasks([{"function": "operator:mul", "args": [i, 2]} for i in range(100)]
                               + [{"executable": "/bin/sh", "arguments": ["-c", "exit 3"]}])
    states = client.wait_tasks(uids, timeout=120)
    assert [states[u] for u in uids[:100]] == ["DONE"] * 100 and states[uids[100]] == "FAILED"
    assert client.get_task(uids[21])["return_value"] == 42 and client.get_task(uids[100])["exit_code"] == 3
    client.close()


def test_state_machine() -> None:
    assert advance(TaskState.PENDING, TaskState.RUNNING) is TaskState.RUNNING
    assert advance(TaskState.PENDING, TaskState.CANCELLED) is TaskState.CANCELLED
    assert advance(TaskState.RUNNING, TaskState.DONE) is TaskState.DONE
    assert advance(TaskState.RUNNING, TaskState.DONE, cancel_requested=True) is TaskState.CANCELLED
    assert advance(TaskState.DONE, TaskState.FAILED) is None
    assert advance(TaskState.CANCELLED, TaskState.DONE) is None
    assert advance(TaskState.PENDING, TaskState.DONE) is None


def test_wire_compaction() -> None:
    tasks = [{"executable": "/bin/true", "timeout": 5, "arguments": [str(i)]} for i in range(3)]
    batch = compact(tasks)
    assert batch["template"] == {"executable": "/bin/true", "timeout": 5}
    assert batch["items"] == [{"arguments": ["0"]}, {"arguments": ["1"]}, {"arguments": ["2"]}]
    assert expand(batch) == tasks
    mixed = [{"function": "a:b"}, {"executable": "/bin/true"}]
    assert expand(compact(mixed)) == mixed
    with pytest.raises(ValueError):
        expand({"items": "nope"})


def test_config_contract() -> None:
    cfg = TasksConfig()
    assert cfg.backend == "local" and cfg.allow_pickled_functions and cfg.output_tail == 4096
    for bad in ({"workers": 0}, {"output_tail": -1}, {"pickles": True}):
        with pytest.raises(ValidationError):
            TasksConfig.model_validate(bad)


def test_get_tasks_reads_records_in_batches_within_bounds(stack) -> None:
    from isthmus.plugins.tasks.client import TasksClient
    from isthmus.plugins.tasks.plugin import GET_TASKS_BYTES
    from isthmus.plugins.tasks.wire import GET_TASKS_MAX

    ann, bob = stack.create_token("user", principal="ann"), stack.create_token("user", principal="bob")
    one, two = (stack.client(ann).get_edge_client("test").get_plugin("tasks", TasksClient) for _ in range(2))
    try:
        small = one.submit_tasks([{"executable": "/bin/sh", "arguments": ["-c", f"echo out{i}; echo err{i} >&2"]}
                                  for i in range(3)])
        size = 2 << 20  # nine of these pass the answer bound: the rest are answered as `more`
        big = one.submit_tasks([{"function": "tests.plugins.tasks_helpers:blob", "args": [size]}] * 9)
        assert set(one.wait_tasks(small + big, timeout=60).values()) == {"DONE"}
        assert 9 * size > GET_TASKS_BYTES

        records = one.get_tasks(small + big)  # the client follows `more`
        assert list(records) == small + big
        assert [records[u]["stdout"] for u in small] == ["out0\n", "out1\n", "out2\n"]
        assert records[small[1]]["stderr"] == "err1\n" and records[small[1]]["exit_code"] == 0
        assert all(records[u]["return_value"] == "x" * size for u in big)
        assert records[small[0]] == one.get_task(small[0])  # the same record as get_task

        stranger = "task.999999"
        with stack.http(ann) as http:
            resp = http.post(f"/test/tasks/get_tasks/{one.sid}", json={"uids": [*small, stranger, *big]})
            resp.raise_for_status()
            answer = resp.json()
            got = [t["uid"] for t in answer["tasks"]]
            assert answer["unknown"] == [stranger] and answer["forgotten"] == {}
            assert got == (small + big)[:len(got)] and answer["more"] == (small + big)[len(got):]
            assert 3 < len(got) < 12 and answer["more"]  # bounded by size, never empty
            rest = http.post(f"/test/tasks/get_tasks/{one.sid}", json={"uids": answer["more"]}).json()
            assert [t["uid"] for t in rest["tasks"]] == answer["more"] and rest["more"] == []

            too_many = http.post(f"/test/tasks/get_tasks/{one.sid}", json={"uids": small * (GET_TASKS_MAX // 3 + 1)})
            assert too_many.status_code == 422 and str(GET_TASKS_MAX) in too_many.text
            assert http.post(f"/test/tasks/get_tasks/{one.sid}", json={"uids": "task.000001"}).status_code == 422

            # another session of the same user has its own numbering: one's later uids are unknown there
            mine = two.submit_tasks([{"executable": "/bin/true"}])
            two.wait_tasks(mine, timeout=30)
            there = http.post(f"/test/tasks/get_tasks/{two.sid}", json={"uids": [big[-1]]}).json()
            assert there["tasks"] == [] and there["unknown"] == [big[-1]]
        with stack.http(bob) as http:  # another user cannot name ann's session at all
            resp = http.post(f"/test/tasks/get_tasks/{one.sid}", json={"uids": small})
            assert resp.status_code == 404 and "out0" not in resp.text
        with pytest.raises(ClientError) as err:
            one.get_tasks([small[0], stranger])
        assert err.value.status_code == 404
    finally:
        one.close()
        two.close()
