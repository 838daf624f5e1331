"""The event bus behind ``GET /events`` (Server-Sent Events).

Each event is encoded once and shared by every subscriber. Subscribers have bounded
queues: a client that does not read loses events (and is told so with a ``gap``
event) instead of growing the bridge's memory. A ring buffer bounded both in events
and in bytes serves ``Last-Event-ID`` replays after a reconnect.

``EventBus`` is the bridge alone: event ids are integers counted in this process. Several
bridges share one event stream through Redis with ``redis_events.RedisEventBus`` (ids are
the Redis stream's); both are used through the same calls: ``notification``/``topology``
to publish (sync, never raising), ``await open(...)`` to subscribe with a replay,
``unsubscribe``, ``await start()``/``await stop()``, ``healthy``/``problem``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from ..types import Principal
from .standalone import Standalone

log = logging.getLogger("isthmus.events")

KEEPALIVE = 15.0
RING_SIZE = 10_000
RING_BYTES = 32 * 1024 * 1024
QUEUE_BYTES = 8 * 1024 * 1024  # per subscriber: what a stalled client may cost the bridge
MAX_WRITE = 256 * 1024


@dataclass(slots=True)
class Event:
    id: int | str  # an int counted by EventBus; a Redis stream id ("1732370000000-3") in RedisEventBus
    payload: bytes  # the encoded SSE block, "id: ..\ndata: ..\n\n"
    edge: str | None
    plugin: str | None
    topic: str  # the notification topic, or "topology"
    owner: str | None  # principal id the event belongs to; None = everyone


@dataclass
class Filters:
    edges: frozenset[str] | None = None
    plugins: frozenset[str] | None = None
    topics: frozenset[str] | None = None

    @classmethod
    def from_query(cls, query: bytes) -> Filters:
        params = parse_qs(query.decode("latin-1"))

        def pick(name: str) -> frozenset[str] | None:
            values = [v for raw in params.get(name, []) for v in raw.split(",") if v]
            return frozenset(values) if values else None

        return cls(pick("edge"), pick("plugin"), pick("topic"))


@dataclass(eq=False)
class Subscriber:
    principal: Principal
    filters: Filters
    queue: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    limit: int = QUEUE_BYTES
    queued: int = 0  # bytes in ``queue``
    credential: str | None = None  # digest of the token that opened the stream
    closed: str | None = None  # why the bridge ended the stream

    def close(self, why: str) -> None:
        self.closed = why
        self.queue.clear()
        self.queued = 0
        self.wake.set()

    def wants(self, event: Event) -> bool:
        if not self.principal.owns(event.owner):
            return False
        f = self.filters
        if event.topic == "topology":
            return f.topics is None or "topology" in f.topics
        if f.edges is not None and event.edge not in f.edges:
            return False
        if f.plugins is not None and event.plugin not in f.plugins:
            return False
        return f.topics is None or event.topic in f.topics

    def push(self, payload: bytes) -> None:
        if self.queued + len(payload) > self.limit:
            self.dropped += 1
        else:
            self.queue.append(payload)
            self.queued += len(payload)
        self.wake.set()

    def take(self, max_bytes: int) -> list[bytes]:
        parts: list[bytes] = []
        size = 0
        while self.queue and size < max_bytes:
            item = self.queue.popleft()
            parts.append(item)
            size += len(item)
        self.queued -= size
        return parts


class EventBus(Standalone):
    def __init__(self, ring_size: int = RING_SIZE, queue_size: int = QUEUE_BYTES,
                 ring_bytes: int = RING_BYTES) -> None:
        self._ring: deque[Event] = deque(maxlen=ring_size)
        self._ring_bytes = 0
        self.ring_budget = ring_bytes
        self._next = 1
        self._subs: set[Subscriber] = set()
        self.queue_size = queue_size
        self.published = 0
        self.dropped = 0  # events slow clients lost, ever (each loss told to its client in a gap event)
        self.lost = 0  # events lost before reaching any client (a shared bus's full outbox; 0 here)

    @property
    def last_id(self) -> int:
        return self._next - 1

    def _emit(self, body: bytes, edge: str | None, plugin: str | None, topic: str,
              owner: str | None) -> None:
        eid = self._next
        self._next += 1
        payload = b"id: %d\ndata: %s\n\n" % (eid, body)
        event = Event(eid, payload, edge, plugin, topic, owner)
        ring = self._ring
        if len(ring) == ring.maxlen:
            self._ring_bytes -= len(ring[0].payload)
        ring.append(event)
        self._ring_bytes += len(payload)
        while self._ring_bytes > self.ring_budget and len(ring) > 1:
            self._ring_bytes -= len(ring.popleft().payload)
        self.published += 1
        self._fanout(event)

    def _fanout(self, event: Event) -> None:
        for sub in self._subs:
            if sub.wants(event):
                sub.push(event.payload)

    def notification(self, edge: str, plugin: str, topic: str, data_json: bytes,
                     owner: str | None) -> None:
        """Publish a plugin notification whose data is already JSON (from the edge)."""
        head = orjson.dumps({"edge": edge, "plugin": plugin, "topic": topic})
        body = b'{"topic":"notification","data":' + head[:-1] + b',"data":' + data_json + b"}}"
        self._emit(body, edge, plugin, topic, owner)

    def topology(self, delta: dict[str, Any]) -> None:
        """Publish a topology delta: ``{"v", "joined": {name: summary}, "left": [names]}``."""
        body = orjson.dumps({"topic": "topology", "data": delta})
        self._emit(body, None, None, "topology", None)

    @property
    def ring_bytes(self) -> int:
        return self._ring_bytes

    def subscriber_list(self) -> list[Subscriber]:
        return list(self._subs)

    # -- what a shared bus does differently ---------------------------------------------------------

    async def open(self, principal: Principal, filters: Filters, last_event_id: str | None,
                   credential: str | None = None) -> Subscriber:
        """Subscribe, first replaying what came after ``last_event_id`` (the raw Last-Event-ID)."""
        return self.subscribe(principal, filters, _int_id(last_event_id), credential=credential)

    def subscribe(self, principal: Principal, filters: Filters, last_id: int | None,
                  credential: str | None = None) -> Subscriber:
        sub = Subscriber(principal, filters, limit=self.queue_size, credential=credential)
        if last_id is not None:
            oldest = int(self._ring[0].id) if self._ring else self._next  # this ring's ids are ints
            if last_id + 1 < oldest:
                sub.push(_gap(oldest - last_id - 1, "the replay buffer no longer holds them"))
            skip = last_id - oldest + 1  # the ring's ids have no holes
            for event in itertools.islice(self._ring, max(skip, 0), None):
                if sub.wants(event):
                    sub.push(event.payload)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


def _gap(missed: int | None, why: str) -> bytes:
    """A ``gap`` event; ``missed`` is None when the count cannot be known (a lost event store)."""
    body = orjson.dumps({"topic": "gap", "data": {"missed": missed, "reason": why}})
    return b"event: gap\ndata: %s\n\n" % body


def _int_id(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _last_event_id_raw(headers: list[tuple[bytes, bytes]], query: bytes) -> str | None:
    """The Last-Event-ID header (or ``last_event_id`` query parameter), as sent; None if absent
    (or longer than any id this bridge makes)."""
    raw: str | None = None
    for key, value in headers:
        if key == b"last-event-id":
            raw = value.decode("latin-1")
            break
    else:
        params = parse_qs(query.decode("latin-1"))
        if "last_event_id" in params:
            raw = params["last_event_id"][0]
    if raw is None or len(raw) > 64:
        return None
    return raw.strip()


def _last_event_id(headers: list[tuple[bytes, bytes]], query: bytes) -> int | None:
    return _int_id(_last_event_id_raw(headers, query))


async def serve_events(bus: EventBus, principal: Principal, scope: dict[str, Any],
                       receive: Any, send: Any, keepalive: float = KEEPALIVE,
                       credential: str | None = None, expires: float | None = None) -> None:
    """Stream events to one client until it goes away, its token is revoked or (an OIDC access
    token) ``expires`` passes: then within one keep-alive interval."""
    query = scope.get("query_string", b"")
    sub = await bus.open(principal, Filters.from_query(query), _last_event_id_raw(scope["headers"], query),
                         credential=credential)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),
    ]})
    disconnected = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                sub.wake.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        await send({"type": "http.response.body", "body": b": connected\nretry: 2000\n\n", "more_body": True})
        while not disconnected.is_set():
            if expires is not None and sub.closed is None and time.time() > expires:
                sub.close("the access token expired; reconnect with a fresh one")
            if sub.closed is not None:
                body = orjson.dumps({"topic": "closed", "data": {"reason": sub.closed}})
                await send({"type": "http.response.body", "body": b"event: closed\ndata: %s\n\n" % body})
                return
            if not sub.queue and not sub.dropped:
                sub.wake.clear()
                try:
                    await asyncio.wait_for(sub.wake.wait(), keepalive)
                except TimeoutError:
                    await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                    continue
                if sub.closed is not None:
                    continue
            parts = sub.take(MAX_WRITE)
            if sub.dropped and not sub.queue:
                parts.append(_gap(sub.dropped, "this client read too slowly"))
                bus.dropped += sub.dropped
                sub.dropped = 0
            if parts:
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
    except OSError:
        pass
    finally:
        bus.unsubscribe(sub)
        watcher.cancel()
