"""The SSE bus: sharing, filters, owners, bounded queues with gap events, replay, keepalive."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from isthmus.bridge.events import EventBus, Filters, serve_events
from isthmus.types import Principal, Role

ADMIN = Principal("root", Role.admin)
ALICE = Principal("alice", Role.user)
BOB = Principal("bob", Role.user)


def payloads(sub) -> list[dict]:
    out = []
    for item in sub.queue:
        data = next(line for line in item.split(b"\n") if line.startswith(b"data: "))[6:]
        out.append(orjson.loads(data))
    return out


def test_owner_and_filters() -> None:
    bus = EventBus()
    everyone = bus.subscribe(ALICE, Filters(), None)
    bob = bus.subscribe(BOB, Filters(), None)
    admin = bus.subscribe(ADMIN, Filters(), None)
    only_jobs = bus.subscribe(ADMIN, Filters.from_query(b"plugin=psij&topic=job_status,other"), None)
    bus.notification("e1", "psij", "job_status", b'{"job_id":"1"}', owner="alice")
    bus.notification("e1", "tasks", "task_status", b'{"uid":"t"}', owner=None)
    assert [p["data"]["plugin"] for p in payloads(everyone)] == ["psij", "tasks"]
    assert [p["data"]["plugin"] for p in payloads(bob)] == ["tasks"]
    assert len(payloads(admin)) == 2
    assert payloads(only_jobs) == [{"topic": "notification", "data": {
        "edge": "e1", "plugin": "psij", "topic": "job_status", "data": {"job_id": "1"}}}]


def test_slow_subscriber_is_bounded_and_told_about_the_gap() -> None:
    bus = EventBus(queue_size=10 * 40)
    sub = bus.subscribe(ADMIN, Filters(), None)
    for i in range(1000):
        bus.notification("e", "p", "t", b'{"i":%d}' % i, None)
    assert sub.queued <= 400 and sub.queued == sum(len(p) for p in sub.queue)
    assert len(sub.queue) + sub.dropped == 1000 and sub.dropped > 980


def test_replay_from_last_event_id_and_gap_when_too_old() -> None:
    bus = EventBus(ring_size=5)
    for i in range(8):
        bus.notification("e", "p", "t", b'{"i":%d}' % i, None)
    sub = bus.subscribe(ADMIN, Filters(), last_id=5)
    assert [p["data"]["data"]["i"] for p in payloads(sub)] == [5, 6, 7]
    old = bus.subscribe(ADMIN, Filters(), last_id=0)
    first = old.queue[0]
    assert first.startswith(b"event: gap")
    assert orjson.loads(first.split(b"data: ")[1])["data"]["missed"] == 3


@pytest.mark.asyncio
async def test_serve_events_writes_batches_keepalives_and_gaps() -> None:
    bus = EventBus(queue_size=5 * 100)
    sent: list[bytes] = []
    gone = asyncio.Event()
    blocked = asyncio.Event()
    blocked.set()

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        await blocked.wait()
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    scope = {"headers": [], "query_string": b""}
    task = asyncio.create_task(serve_events(bus, ADMIN, scope, receive, send, keepalive=0.05))
    await asyncio.sleep(0.15)
    assert any(b": keepalive" in chunk for chunk in sent)
    blocked.clear()  # the client stops reading
    for i in range(50):
        bus.notification("e", "p", "t", b'{"i":%d}' % i, None)
    await asyncio.sleep(0.05)
    blocked.set()
    await asyncio.sleep(0.1)
    body = b"".join(sent)
    assert b"event: gap" in body
    assert body.count(b"data: {\"topic\":\"notification\"") <= 6
    gone.set()
    await asyncio.wait_for(task, 2)
    assert bus.subscribers == 0
