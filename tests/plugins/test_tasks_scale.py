"""#12: no per-call cost grows with the session's history (tasks), nor with the job table (psij).

Structural checks, not timings: what the edge touches for a question about one task, and
what crosses the wire when the client waits for one task in a session that holds thousands.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from isthmus import ClientError
from isthmus.plugins.psij.store import JobStore
from isthmus.plugins.tasks.client import TasksClient
from isthmus.plugins.tasks.config import TasksConfig
from isthmus.plugins.tasks.index import NumberSet, merged_page, number_of, uid_of
from isthmus.plugins.tasks.plugin import TasksSession
from isthmus.plugins.tasks.states import TaskState
from isthmus.testing.stack import Stack

ONE = {"function": "operator:pos", "args": [1]}
HISTORY = 5000
KEEP = 3000  # max_tasks of the stack below: the big session forgets its oldest 2000


# -- the index ----------------------------------------------------------------------------------------


class CountingDict(dict[int, set[int]]):
    reads = 0

    def __getitem__(self, key: int) -> set[int]:
        CountingDict.reads += 1
        return super().__getitem__(key)


class CountingSet(NumberSet):
    """A NumberSet that counts the blocks a page reads and the full copies taken."""

    def __init__(self) -> None:
        super().__init__()
        self._blocks = CountingDict()
        self.snapshots = 0

    def snapshot(self) -> list[int]:
        self.snapshots += 1
        return super().snapshot()


def test_number_set_pages_like_a_sorted_list() -> None:
    rng = random.Random(12)
    sets = [NumberSet() for _ in range(3)]
    model: list[set[int]] = [set() for _ in range(3)]
    for _ in range(20_000):
        i, n = rng.randrange(3), rng.randrange(10_000)
        if rng.random() < 0.6 and all(n not in m for m in model):
            sets[i].add(n)
            model[i].add(n)
        else:
            sets[i].discard(n)
            model[i].discard(n)
    for s, m in zip(sets, model, strict=True):
        assert len(s) == len(m) and s.snapshot() == sorted(m)
        assert all(n in s for n in m) and 10_001 not in s
        for after in (-1, 0, 1023, 1024, 5000, 9999):
            assert s.page(after, 37) == sorted(n for n in m if n > after)[:37]
    union = sorted(set().union(*model))
    assert merged_page(sets, 4000, 500) == [n for n in union if n > 4000][:500]
    assert number_of(uid_of(7)) == 7 and number_of(uid_of(1_234_567)) == 1_234_567
    assert number_of("task.7") is None and number_of("task.0000007") is None and number_of("job.000007") is None


def test_a_page_reads_the_blocks_it_returns() -> None:
    big = CountingSet()
    for n in range(1, 200_001):
        big.add(n)
    CountingDict.reads = 0
    assert big.page(150_000, 10) == list(range(150_001, 150_011))
    assert CountingDict.reads <= 2  # the block holding 150,001 (and at most the next): not the 195 others
    CountingDict.reads = 0
    assert len(big.page(0, 3000)) == 3000 and CountingDict.reads <= 4


# -- the edge's session, in process --------------------------------------------------------------------


class WatchedTasks(dict[str, Any]):
    """The session's task dict, counting every walk over it."""

    walks = 0

    def __iter__(self) -> Any:
        WatchedTasks.walks += 1
        return super().__iter__()

    def keys(self) -> Any:
        WatchedTasks.walks += 1
        return super().keys()

    def values(self) -> Any:
        WatchedTasks.walks += 1
        return super().values()

    def items(self) -> Any:
        WatchedTasks.walks += 1
        return super().items()


class IdleBackend:
    """Runs nothing: the test moves tasks itself."""

    name = "idle"

    def parallelism(self) -> int:
        return 0

    async def kill(self, keys: set[str]) -> None:
        pass


def make_session(tmp_path: Path, max_tasks: int = 200_000) -> tuple[TasksSession, list[tuple[str, Any]]]:
    events: list[tuple[str, Any]] = []
    session = TasksSession("session.scale")
    session.plugin = SimpleNamespace(config=TasksConfig(max_tasks=max_tasks), cancel_dir=tmp_path,  # type: ignore
                                     mark_cancelled=lambda keys: None)
    session.backend = IdleBackend()  # type: ignore[assignment]
    session._notify = lambda topic, data: events.append((topic, data))
    session.tasks = WatchedTasks()
    session.by_state = {state: CountingSet() for state in TaskState}
    return session, events


def finish(session: TasksSession, uids: list[str], state: TaskState = TaskState.DONE) -> None:
    for uid in uids:
        task = session.tasks[uid]
        session._move(task, TaskState.RUNNING)
        session._move(task, state)
    session._trim()


def test_questions_about_one_task_never_walk_the_session(tmp_path: Path) -> None:
    async def main() -> None:
        session, events = make_session(tmp_path)
        uids = session.submit([dict(ONE) for _ in range(HISTORY)])
        finish(session, uids[:-10])
        session._flush()
        WatchedTasks.walks = 0
        done = session.by_state[TaskState.DONE]
        assert isinstance(done, CountingSet)
        CountingDict.reads = 0

        assert await session.wait([uids[-1]], 0.01) is False  # still pending
        assert await session.wait([uids[7]], 0.01) is True
        assert await session.wait(None, 0.01) is False
        found, unknown = session.states([uids[3], uids[-1], "task.999999", "nonsense"])
        assert [t["state"] for t in found] == ["DONE", "PENDING"] and unknown == ["task.999999", "nonsense"]
        assert [t.uid for t in session.page(None, number_of(uids[2000]) or 0, 5)] == uids[2001:2006]
        assert [t.uid for t in session.page(TaskState.PENDING, 0, 3)] == uids[-10:-7]
        assert session.counts() == {"PENDING": 10, "RUNNING": 0, "DONE": HISTORY - 10, "FAILED": 0, "CANCELLED": 0}
        assert session.unfinished() == 10 and session.unfinished_uids() == uids[-10:]
        session.mark_read(session.tasks[uids[5]])
        assert await session.cancel(session.unfinished_uids()) == 10
        more = session.submit([dict(ONE)])
        finish(session, more)
        assert await session.wait(None, 0.01) is True

        assert WatchedTasks.walks == 0, "a question about a few tasks walked every task of the session"
        assert done.snapshots == 0, "the finished tasks were copied out"
        assert CountingDict.reads < 20, f"{CountingDict.reads} blocks read for a handful of tasks"
        # events name the session: one owner's clients see all its sessions' events, uids are per session
        assert events and all(data.get("sid") == "session.scale" for _topic, data in events)

    asyncio.run(main())


def test_finished_tasks_beyond_max_tasks_go_read_ones_first(tmp_path: Path) -> None:
    async def main() -> None:
        session, _events = make_session(tmp_path, max_tasks=100)
        uids = session.submit([dict(ONE) for _ in range(100)])
        finish(session, uids[:90])
        finish(session, uids[90:], TaskState.FAILED)
        for uid in uids[50:60]:
            session.mark_read(session.tasks[uid])
        more = session.submit([dict(ONE) for _ in range(15)])
        finish(session, more)
        # the 10 read ones went first, then the 5 oldest unread ones
        gone = set(uids[50:60]) | set(uids[:5])
        assert gone.isdisjoint(session.tasks) and set(uids) - gone <= session.tasks.keys()
        assert len(session.tasks) == 100 and session.forgotten_count == 15
        assert session.forgotten_state(uids[0]) is TaskState.DONE and session.forgotten_state(uids[5]) is None
        found, unknown = session.states([uids[55], uids[95]])
        assert found == [{"uid": uids[55], "state": "DONE", "exit_code": None, "forgotten": True},
                         {"uid": uids[95], "state": "FAILED", "exit_code": None}] and not unknown
        assert await session.wait([uids[55]], 0.01) is True
        assert session.counts()["DONE"] + session.counts()["FAILED"] == 100
        assert len(session.forgotten) <= len(uids) + len(more) + 1  # one byte per task number

    asyncio.run(main())


# -- through bridge and edge --------------------------------------------------------------------------


class Recorder:
    """An httpx.Client that notes each request: method, route, request and answer sizes."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self.calls: list[tuple[str, str, int, int]] = []

    def _note(self, resp: httpx.Response) -> httpx.Response:
        route = resp.request.url.path.split("/")[3]  # /{edge}/tasks/{route}/...
        self.calls.append((resp.request.method, route, len(resp.request.content), len(resp.content)))
        return resp

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._note(self._http.get(url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._note(self._http.post(url, **kwargs))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = {"plugins": {"tasks": {"max_tasks": KEEP}}}
    with Stack(plugins=["tasks"], config=config, workdir=tmp_path_factory.mktemp("tasks-scale")) as s:
        yield s


@pytest.fixture(scope="module")
def big(stack: Stack) -> Any:
    """A session that ran 5000 tasks (and kept the last 3000)."""
    client = stack.client().get_edge_client("test").get_plugin("tasks")
    uids = client.submit_tasks([{"function": "operator:neg", "args": [i]} for i in range(HISTORY)])
    assert set(client.wait_tasks(uids, timeout=120).values()) == {"DONE"}
    yield client, uids
    client.close()


def test_one_task_wait_asks_only_about_that_task(stack: Stack, big: Any) -> None:
    client, _uids = big
    recorder = Recorder(client._http)
    client._http = recorder
    try:
        for _ in range(5):
            uid = client.submit_tasks([ONE])[0]
            assert client.wait_tasks([uid], timeout=60) == {uid: "DONE"}
    finally:
        client._http = recorder._http
    routes = {route for _m, route, _q, _a in recorder.calls}
    assert routes <= {"submit_tasks", "wait_tasks"}, f"a one-task wait read more: {recorder.calls}"
    assert max(size for *_r, size in recorder.calls) < 1024, recorder.calls
    assert max(size for _m, _r, size, _a in recorder.calls) < 1024, recorder.calls

    # without an event stream: one long poll about that one uid, and its answer is as small
    uid = client.submit_tasks([{"function": "time:sleep", "args": [0.3]}])[0]
    plain = TasksClient(recorder._http, "test", "tasks", bridge=None)
    plain.sid = client.sid
    plain._http = recorder = Recorder(recorder._http)  # type: ignore[assignment]
    assert plain.wait_tasks([uid], timeout=60) == {uid: "DONE"}
    assert [(m, r) for m, r, _q, _a in recorder.calls] == [("POST", "wait_tasks")]
    assert recorder.calls[0][2] < 128 and recorder.calls[0][3] < 256, recorder.calls


def test_listing_pages_and_forgotten_tasks_still_answer(big: Any) -> None:
    client, uids = big
    page = client.list_page()
    assert len(page["tasks"]) == 1000 and page["next"] == page["tasks"][-1]["uid"]  # bounded by default
    assert page["forgotten"] >= HISTORY - KEEP and sum(page["counts"].values()) <= KEEP
    everything = client.list_tasks()
    kept = [t["uid"] for t in everything]
    assert kept == sorted(kept, key=number_of) and len(kept) == len(set(kept)) == sum(page["counts"].values())
    assert [t["uid"] for t in client.list_tasks(limit=5, after=kept[10])] == kept[11:16]
    assert client.list_tasks(state="PENDING") == [] and len(client.list_tasks(state="DONE", limit=7)) == 7
    assert client.list_page(limit=0)["tasks"] == []
    for bad in ({"limit": 10**6}, {"after": "nonsense"}, {"state": "SLEEPING"}):
        with pytest.raises(ClientError) as err:
            client.list_page(**bad)
        assert err.value.status_code == 422

    oldest = uids[0]  # forgotten (max_tasks), but its final state is still known
    with pytest.raises(ClientError) as err:
        client.get_task(oldest)
    assert err.value.status_code == 404 and "forgotten" in str(err.value)
    assert client.task_states([oldest, uids[-1]]) == {oldest: "DONE", uids[-1]: "DONE"}
    assert client.wait_tasks([oldest, uids[-1]], timeout=30) == {oldest: "DONE", uids[-1]: "DONE"}
    assert client.get_task(uids[-1])["return_value"] == -(HISTORY - 1)
    with pytest.raises(ClientError) as err:
        client.wait_tasks(["task.999999"], timeout=30)  # never issued: an error, not a wait until the timeout
    assert err.value.status_code == 404
    with pytest.raises(ClientError) as err:
        client.task_states(["task.999999"])
    assert err.value.status_code == 404
    states = client.wait_tasks(timeout=60)  # every task of the session
    assert set(states) == set(t["uid"] for t in client.list_tasks()) and set(states.values()) == {"DONE"}


def test_another_sessions_events_do_not_end_a_wait(stack: Stack) -> None:
    """Uids are per session: task.000001 of one session must not settle task.000001 of another."""
    edge = stack.client().get_edge_client("test")
    slow, quick = edge.get_plugin("tasks"), edge.get_plugin("tasks")
    try:
        mine = slow.submit_tasks([{"function": "time:sleep", "args": [1.5]}])[0]
        theirs = quick.submit_tasks([ONE])[0]
        assert mine == theirs
        quick.wait_tasks([theirs], timeout=30)
        start = time.monotonic()
        assert slow.wait_tasks([mine], timeout=30) == {mine: "DONE"}
        assert slow.get_task(mine)["state"] == "DONE", "the wait ended on the other session's event"
        assert time.monotonic() - start > 0.5
    finally:
        slow.close()
        quick.close()


# -- psij: a page of jobs reads its rows, not the table -----------------------------------------------------


def test_psij_job_pages_use_an_index(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for i in range(60):
        store.create({"id": f"j{i:02d}", "owner": "ab"[i % 2], "executor": "local", "native_id": None,
                      "spec": {"executable": "x"}, "state": "NEW", "exit_code": None, "message": None,
                      "stdout_path": "o", "stderr_path": "e", "exit_file": "x", "workdir": str(tmp_path)})
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    for owner in (None, "a"):
        seen: list[str] = []
        before = None
        while True:
            page = store.list(owner, 7, before)
            seen += [r["id"] for r in page]
            if len(page) < 7:
                break
            before = page[-1]["id"]
        expected = [f"j{i:02d}" for i in range(60) if owner is None or "ab"[i % 2] == owner]
        assert sorted(seen) == expected and len(seen) == len(set(seen))
    store._db.set_trace_callback(None)
    with pytest.raises(KeyError):
        store.list("a", 7, "j01")  # b's job is no cursor for a
    for sql in {s for s in statements if "ORDER BY" in s}:
        plan = " | ".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql))
        # an index walks the rows in order (ties on created are sorted within the page: RIGHT PART OF)
        assert "USING INDEX" in plan and "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
    store.close()
