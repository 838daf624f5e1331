"""The event stream shared through Redis: two buses on one real redis-server are two bridges.

Same ids everywhere, exact replays on another bridge, gaps for what a trim or an outage
took, nothing raised into publishers while Redis is gone, ownership and filters as alone.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import redis

from isthmus.bridge import redis_events
from isthmus.bridge.events import EventBus, Filters, Subscriber, serve_events
from isthmus.bridge.redis_events import RedisEventBus, make_event_bus
from isthmus.testing.redis import RedisServer
from isthmus.types import Principal, Role
from tests.multibridge.conftest import eventually

ADMIN = Principal("root", Role.admin)
ALICE = Principal("alice", Role.user)
BOB = Principal("bob", Role.user)


@asynccontextmanager
async def bridges(url: str, n: int = 2, **kwargs: Any) -> AsyncIterator[list[RedisEventBus]]:
    buses = [RedisEventBus(url, **kwargs) for _ in range(n)]
    for bus in buses:
        await bus.start()
    try:
        yield buses
    finally:
        for bus in buses:
            await bus.stop()


until = functools.partial(eventually, timeout=5.0)


def events(sub: Subscriber) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    """(id, event name, data) of each queued SSE block."""
    out = []
    for block in sub.queue:
        fields: dict[str, str] = {}
        for line in block.decode().strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        out.append((fields.get("id"), fields.get("event"), orjson.loads(fields["data"])))
    return out


def numbers(sub: Subscriber) -> list[int]:
    return [data["data"]["data"]["i"] for _id, _name, data in events(sub) if data["topic"] == "notification"]


def ids(sub: Subscriber) -> list[str | None]:
    return [event_id for event_id, _name, _data in events(sub)]


def publish(bus: EventBus, first: int, count: int, owner: str | None = None) -> None:
    for i in range(first, first + count):
        bus.notification("hpc1", "psij", "job_status", b'{"i":%d}' % i, owner)


@pytest.mark.asyncio
async def test_an_event_reaches_both_bridges_with_the_same_id(url: str) -> None:
    async with bridges(url) as (a, b):
        on_a = await a.open(ADMIN, Filters(), None)
        on_b = await b.open(ADMIN, Filters(), None)
        publish(a, 0, 3)
        publish(b, 3, 3)
        b.topology({"v": 1, "joined": {"hpc1": {}}, "left": []})
        await until(lambda: len(on_a.queue) == 7 and len(on_b.queue) == 7)
        assert list(on_a.queue) == list(on_b.queue)  # the same bytes: ids, order, encoding
        assert sorted(numbers(on_a)) == list(range(6))
        epochs = {event_id.split("-")[0] for event_id in ids(on_a) if event_id}
        seqs = [int(event_id.split("-")[1]) for event_id in ids(on_a) if event_id]
        assert len(epochs) == 1 and seqs == list(range(1, 8))
        topology = [data for _i, _n, data in events(on_a) if data["topic"] == "topology"]  # the writers race
        assert topology == [{"topic": "topology", "data": {"v": 1, "joined": {"hpc1": {}}, "left": []}}]
        assert a.healthy and b.healthy and a.problem is None


@pytest.mark.asyncio
async def test_a_client_moving_to_another_bridge_gets_exactly_what_it_missed(url: str) -> None:
    async with bridges(url) as (a, b):
        on_a = await a.open(ADMIN, Filters(), None)
        publish(a, 0, 5)
        await until(lambda: len(on_a.queue) == 5)
        last = ids(on_a)[2]  # the client saw 0, 1, 2 and went away
        publish(a, 5, 5)  # published while it reconnects; B's reader may not have them yet
        moved = await b.open(ADMIN, Filters(), last)
        publish(b, 10, 2)
        await until(lambda: len(moved.queue) >= 9)
        await asyncio.sleep(0.1)  # anything B's reader still had to deliver has come by now
        assert numbers(moved) == list(range(3, 12))  # each once, in order
        await until(lambda: len(on_a.queue) == 12)
        assert ids(moved) == ids(on_a)[3:]

        current = await b.open(ADMIN, Filters(), ids(on_a)[-1])  # up to date: nothing to replay
        assert not current.queue
        garbage = await b.open(ADMIN, Filters(), "not-an-id")  # as today: no replay
        assert not garbage.queue


@pytest.mark.asyncio
async def test_a_replay_from_a_trimmed_id_starts_with_a_gap(url: str) -> None:
    async with bridges(url, ring_size=5, min_stream=5) as (a, b):
        on_a = await a.open(ADMIN, Filters(), None)
        publish(a, 0, 1)
        await until(lambda: len(on_a.queue) == 1)
        first = ids(on_a)[0]
        for i in range(1, 20):  # one at a time: the live reader sees each before a trim
            publish(a, i, 1)
            await until(lambda i=i: len(on_a.queue) == i + 1)
        late = await b.open(ADMIN, Filters(), first)
        (_, name, data), *rest = events(late)
        assert name == "gap" and data["data"]["missed"] == 14  # 1..14 are gone; 15..19 replayed
        assert [d["data"]["data"]["i"] for _i, _n, d in rest] == [15, 16, 17, 18, 19]
        with redis.Redis.from_url(url) as db:
            assert db.xlen(redis_events.STREAM) == 5


@pytest.mark.asyncio
async def test_replays_are_capped_at_the_ring_size_even_when_the_stream_holds_more(url: str) -> None:
    async with bridges(url, n=1, ring_size=3, min_stream=100) as (a,):
        on_a = await a.open(ADMIN, Filters(), None)
        publish(a, 0, 10)
        await until(lambda: len(on_a.queue) == 10)
        late = await a.open(ADMIN, Filters(), ids(on_a)[0])
        assert events(late)[0][1] == "gap" and events(late)[0][2]["data"]["missed"] == 6
        assert numbers(late) == [7, 8, 9]
        old = await a.open(ADMIN, Filters(), "42")  # an id of a bridge without Redis: older than any
        assert events(old)[0][1] == "gap" and events(old)[0][2]["data"]["missed"] is None
        assert numbers(old) == [7, 8, 9]


@pytest.mark.asyncio
async def test_the_stream_is_bounded_in_bytes_too(url: str) -> None:
    budget = 256 * 1024
    async with bridges(url, n=1, ring_bytes=budget, min_stream_bytes=0) as (a,):
        on_a = await a.open(ADMIN, Filters(), None)
        big = b'"' + b"x" * 20_000 + b'"'
        for _ in range(40):
            a.notification("hpc1", "psij", "blob", big, None)

        def delivered() -> list[dict[str, Any]]:
            return [d for _i, n, d in events(on_a) if n is None]

        def missed() -> int:
            return sum(d["data"]["missed"] for _i, n, d in events(on_a) if n == "gap")

        await until(lambda: len(delivered()) + missed() == 40)
        with redis.Redis.from_url(url) as db:
            held = db.xlen(redis_events.STREAM)
            weight = int(db.hget(redis_events.META, "bytes") or 0)
            each = int(db.lindex(redis_events.SIZES, 0) or 0)
        assert 0 < held < 40 and weight <= budget and weight == a.ring_bytes == held * each
        assert len(big) < each < len(big) + 200 and held == budget // each  # as many as fit, the newest
        assert len(delivered()) >= held  # each one delivered or counted in a gap


@pytest.mark.asyncio
async def test_ownership_and_filters_hold_across_bridges_and_in_replays(url: str) -> None:
    async with bridges(url) as (a, b):
        alice, bob, admin = [await b.open(p, Filters(), None) for p in (ALICE, BOB, ADMIN)]
        only_tasks = await b.open(ADMIN, Filters.from_query(b"plugin=tasks"), None)
        watch = await a.open(ADMIN, Filters(), None)
        a.notification("hpc1", "psij", "job_status", b'{"i":0}', "alice")
        a.notification("hpc1", "tasks", "task_status", b'{"i":1}', None)
        await until(lambda: len(admin.queue) == 2 and len(watch.queue) == 2)
        await asyncio.sleep(0.05)
        assert numbers(alice) == [0, 1] and numbers(bob) == [1] and numbers(only_tasks) == [1]
        before_all = ids(watch)[0].split("-")[0] + "-0"
        bob_again = await b.open(BOB, Filters(), before_all)  # a replay of both: still only his
        assert numbers(bob_again) == [1]


@pytest.mark.asyncio
async def test_serve_events_resumes_on_another_bridge_from_the_last_event_id_header(url: str) -> None:
    async with bridges(url) as (a, b):
        on_a = await a.open(ADMIN, Filters(), None)
        publish(a, 0, 4)
        await until(lambda: len(on_a.queue) == 4)
        sent: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message["body"])

        scope = {"headers": [(b"last-event-id", ids(on_a)[1].encode())], "query_string": b"topic=job_status"}
        task = asyncio.create_task(serve_events(b, ADMIN, scope, receive, send, keepalive=5))
        await until(lambda: b"".join(sent).count(b"data: ") >= 2)
        publish(a, 4, 1)
        await until(lambda: b'"i":4' in b"".join(sent))
        body = b"".join(sent)
        assert [ids(on_a)[i].encode() in body for i in range(4)] == [False, False, True, True]
        assert body.count(b"data: ") == 3
        gone.set()
        await asyncio.wait_for(task, 2)
        assert b.subscribers == 0


@pytest.mark.asyncio
async def test_in_memory_bus_keeps_integer_ids_through_open() -> None:
    bus = make_event_bus(ring_size=5)
    assert type(bus) is EventBus
    await bus.start()
    publish(bus, 0, 8)
    sub = await bus.open(ADMIN, Filters(), "5")
    assert numbers(sub) == [5, 6, 7] and ids(sub) == ["6", "7", "8"]
    assert bus.healthy and bus.problem is None
    await bus.stop()


async def _killed_and_back(r: RedisServer, buses: list[RedisEventBus],
                           while_down: Callable[[], Awaitable[None]]) -> None:
    r.stop()
    await while_down()
    await until(lambda: not any(bus.healthy for bus in buses))
    assert all("Redis" in (bus.problem or "") for bus in buses)
    r.start()
    await until(lambda: all(bus.healthy for bus in buses), timeout=10)


@pytest.mark.asyncio
async def test_an_outage_buffers_events_and_delivers_them_when_redis_is_back() -> None:
    with RedisServer() as r:
        async with bridges(r.url) as (a, b):
            on_a, on_b = await a.open(ADMIN, Filters(), None), await b.open(ADMIN, Filters(), None)
            publish(a, 0, 2)
            await until(lambda: len(on_b.queue) == 2)
            before = ids(on_b)[-1]

            async def down() -> None:
                await asyncio.sleep(0.05)
                publish(a, 2, 3)  # no exception, no blocking
                publish(b, 5, 2)
                await until(lambda: a.buffered + b.buffered == 5)

            await _killed_and_back(r, [a, b], down)
            await until(lambda: len(numbers(on_a)) == 7 and len(numbers(on_b)) == 7)
            assert sorted(numbers(on_b)) == list(range(7))
            assert numbers(on_a) == numbers(on_b)
            gaps = [d["data"] for _i, n, d in events(on_b) if n == "gap"]
            assert gaps and all(g["missed"] is None for g in gaps)  # "Redis lost its data" told once
            assert len(gaps) == 1
            # A client of the lost store moving bridges: told, and given the new store's events.
            moved = await a.open(ADMIN, Filters(), before)
            assert events(moved)[0][1] == "gap" and sorted(numbers(moved)) == list(range(2, 7))
            publish(b, 7, 1)
            await until(lambda: 7 in numbers(on_a) and 7 in numbers(moved))


@pytest.mark.asyncio
async def test_an_outage_longer_than_the_buffer_is_reported_as_a_gap_on_every_bridge() -> None:
    with RedisServer() as r:
        async with bridges(r.url, buffer_events=3) as (a, b):
            on_b = await b.open(ADMIN, Filters(), None)

            async def down() -> None:
                await asyncio.sleep(0.05)
                publish(a, 0, 10)

            await _killed_and_back(r, [a, b], down)
            assert a.lost == 7
            await until(lambda: any(d["data"].get("missed") == 7 for _i, _n, d in events(on_b)))
            await until(lambda: len(numbers(on_b)) == 3)
            stream_gap = [(i, d["data"]) for i, n, d in events(on_b) if n == "gap" and i is not None]
            assert numbers(on_b) == [0, 1, 2] and len(stream_gap) == 1  # with an id: a stream entry
            assert "buffer overflowed" in stream_gap[0][1]["reason"]
            publish(a, 10, 1)
            await until(lambda: numbers(on_b)[-1:] == [10])


@pytest.mark.asyncio
async def test_a_reader_that_fell_behind_a_trim_reports_how_many_it_missed(url: str) -> None:
    async with bridges(url, ring_size=5, min_stream=5) as (a, b):
        on_a, on_b = await a.open(ADMIN, Filters(), None), await b.open(ADMIN, Filters(), None)
        publish(a, 0, 1)
        await until(lambda: len(on_b.queue) == 1)
        reader = b._tasks[0]  # B's reader stalls (white box: as if its loop were busy)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        for i in range(1, 13):
            publish(a, i, 1)
            await until(lambda i=i: len(on_a.queue) == i + 1)
        b._tasks[0] = asyncio.create_task(b._read_loop())
        await until(lambda: len(numbers(on_b)) == 6)
        gap = [d["data"] for _i, n, d in events(on_b) if n == "gap"]
        assert gap == [{"missed": 7, "reason": redis_events.TRIMMED}]
        assert numbers(on_b) == [0, 8, 9, 10, 11, 12]


@pytest.mark.asyncio
async def test_a_replay_while_redis_is_down_is_a_gap_then_live_events() -> None:
    with RedisServer() as r:
        async with bridges(r.url, n=1) as (a,):
            publish(a, 0, 2)
            await until(lambda: a.received == 2)
            r.stop()
            sub = await a.open(ADMIN, Filters(), "1-1")
            assert events(sub)[0][2]["data"] == {"missed": None, "reason": redis_events.NO_REPLAY}
            r.start()
            await until(lambda: a.healthy, timeout=10)
            publish(a, 2, 1)
            await until(lambda: numbers(sub) == [2])
