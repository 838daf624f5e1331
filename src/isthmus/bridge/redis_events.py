"""The event stream shared by several bridges: a Redis stream behind every bridge's ``/events``.

    bus = make_event_bus(ring_size, queue_size, ring_bytes, redis_url=settings.redis)
    await bus.start()            # in the bridge's startup; ``await bus.stop()`` in its shutdown
    bus.notification(...)        # sync and never raising, as with EventBus
    sub = await bus.open(principal, filters, last_event_id, credential)   # serve_events does this
    bus.healthy, bus.problem     # for /healthz

Every bridge appends the events it publishes (its edges' notifications, its topology
deltas) to one stream, and one reader task per bridge (``XREAD BLOCK`` from the last id it
saw) hands each entry, encoded once, to that bridge's subscribers through the queues, gap
events and filters of ``events.py``. A client sees the same events with the same ids on
every bridge, so it may reconnect anywhere with ``Last-Event-ID``.

Ids are ``<epoch>-<seq>``, the entries' stream ids: ``epoch`` is the time (ms) the stream was
started, ``seq`` counts its events from 1 without holes. So a missing range is counted
exactly (a reader that fell behind a trim, a replay from a trimmed id), and a store that lost
its data (a Redis restart without persistence) starts a later epoch, which readers notice and
report as a gap whose ``missed`` is null: what was lost with the store cannot be counted.

Keys (one hash tag, so that a Redis Cluster keeps them together)::

    {isthmus:events}         the stream. Fields: b (the event's JSON), t (topic), e (edge),
                             p (plugin), o (owner principal id; absent: everyone), k ("gap")
    {isthmus:events}:meta    epoch, seq (the newest id), bytes (what the entries weigh)
    {isthmus:events}:sizes   each entry's weight, oldest first: trimming needs no payloads

One Lua script appends a batch and trims the stream to ``max(ring_size, min_stream)``
entries and ``max(ring_bytes, min_stream_bytes)`` bytes, exactly, always keeping the newest
entry (the floors leave readers that lag some slack when the replay ring is small). Replays
give at most ``ring_size`` entries, as the in-memory ring does.

When Redis is unreachable, publishing appends to a local buffer (bounded in events and
bytes) that the writer sends, in order, when Redis is back. What overflows the buffer is
counted and published as a ``gap`` entry in its place, so every event published while Redis
was gone is delivered or reported. Readers reconnect with back-off and resume from their
last id; ``healthy`` is False and ``problem`` says why in the meantime.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..types import Principal
from .events import QUEUE_BYTES, RING_BYTES, RING_SIZE, Event, EventBus, Filters, Subscriber, _gap

log = logging.getLogger("isthmus.events")

STREAM = "{isthmus:events}"
META = STREAM + ":meta"
SIZES = STREAM + ":sizes"

MIN_STREAM = 1000  # entries the stream keeps whatever the replay ring: slack for readers that lag
MIN_STREAM_BYTES = 4 * 1024 * 1024
ENTRY_OVERHEAD = 64  # bytes an entry costs beyond its fields (counted against the byte budget)
BUFFER_EVENTS = 100_000  # events waiting for Redis (a burst from an edge, or Redis away); bytes bound it too
BUFFER_BYTES = 16 * 1024 * 1024
BATCH_EVENTS = 500  # entries per script call
BATCH_BYTES = 4 * 1024 * 1024
READ_COUNT = 500  # entries per XREAD
READ_BLOCK_MS = 2000
PAGE = 200  # entries per XRANGE during a replay
REPLAYS = 8  # replays running at once (the others wait)
REPLAY_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 0.1, 2.0
START_WAIT = 2.0  # how long start() waits for Redis before going on degraded
FLUSH_WAIT = 2.0  # how long stop() waits for the buffer to drain

RESET = "the event store (Redis) lost its data; events published before that may be missing"
TRIMMED = "the event store no longer holds them"
OVERFLOW = "this bridge's buffer overflowed while the event store (Redis) was unreachable"
NO_REPLAY = "the event store (Redis) is unreachable, so missed events could not be replayed"
UNKNOWN = "the event store does not know that id (it lost its data since, or the id is from elsewhere)"

_ID = re.compile(r"(\d{1,19})(?:-(\d{1,19}))?")

# KEYS: stream, meta, sizes. ARGV: maxlen, maxbytes, then per entry: weight, n, then n strings
# (field, value, field, value...)
# Returns {newest id, entries, bytes}.
_ADD = """
local stream, meta, sizes = KEYS[1], KEYS[2], KEYS[3]
local maxlen, maxbytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local epoch = redis.call('HGET', meta, 'epoch')
local fresh = not epoch
if epoch and (redis.call('EXISTS', stream) == 0
              or redis.call('XLEN', stream) ~= redis.call('LLEN', sizes)) then
  fresh = true
end
if fresh then
  local t = redis.call('TIME')
  local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  if epoch and tonumber(now) <= tonumber(epoch) then
    now = string.format('%d', tonumber(epoch) + 1)
  end
  epoch = now
  redis.call('DEL', stream, sizes)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', '0', 'bytes', '0')
end
local seq = tonumber(redis.call('HGET', meta, 'seq'))
local bytes = tonumber(redis.call('HGET', meta, 'bytes'))
local len = redis.call('LLEN', sizes)
local id = nil
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  seq = seq + 1
  id = epoch .. '-' .. string.format('%d', seq)
  local args = {stream, id}
  for j = i + 2, i + 1 + n do args[#args + 1] = ARGV[j] end
  redis.call('XADD', unpack(args))
  redis.call('RPUSH', sizes, ARGV[i])
  bytes = bytes + tonumber(ARGV[i])
  len = len + 1
  i = i + 2 + n
end
local dropped = 0
while len > 1 and (len > maxlen or bytes > maxbytes) do
  bytes = bytes - tonumber(redis.call('LPOP', sizes))
  len = len - 1
  dropped = dropped + 1
end
if dropped > 0 then
  redis.call('XTRIM', stream, 'MINID', epoch .. '-' .. string.format('%d', seq - len + 1))
end
redis.call('HSET', meta, 'seq', string.format('%d', seq), 'bytes', string.format('%d', bytes))
return {id, len, bytes}
"""


def parse_id(value: str | bytes | None) -> tuple[int, int] | None:
    """``"1732370000000-3"`` → (1732370000000, 3); a bare integer (an in-memory bridge's id)
    is ``n-0``, older than any epoch; anything else is None."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _ID.fullmatch(text.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2] or 0)


def _entries(reply: Any) -> Any:
    """(id, fields) of each entry of an XREAD reply (RESP2: [[stream, entries]];
    RESP3: {stream: [entries]})."""
    if isinstance(reply, dict):
        for value in reply.values():
            yield from (value[0] if value and isinstance(value[0], list) else value)
    else:
        for _stream, entries in reply or ():
            yield from entries


def format_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass(slots=True)
class StreamEvent(Event):
    key: tuple[int, int]  # the parsed id, for ordering


@dataclass(slots=True)
class _Out:
    """An event waiting to be appended: its stream fields and what it weighs."""

    fields: list[bytes]
    size: int


@dataclass(slots=True)
class _Lost:
    """Events the local buffer could not keep, published as one gap entry in their place."""

    count: int = 1
    sealed: bool = False  # taken into a batch: later losses start a new marker

    def entry(self) -> _Out:
        body = orjson.dumps({"topic": "gap", "data": {"missed": self.count, "reason": OVERFLOW}})
        return _Out([b"b", body, b"t", b"gap", b"k", b"gap"], len(body) + ENTRY_OVERHEAD)


@dataclass(slots=True)
class _Held:
    """What the reader delivers to a subscriber while its replay runs (bounded like its queue)."""

    items: list[StreamEvent | bytes] = field(default_factory=list)
    size: int = 0
    dropped: int = 0


def make_event_bus(ring_size: int = RING_SIZE, queue_size: int = QUEUE_BYTES, ring_bytes: int = RING_BYTES,
                   *, redis_url: str | None = None) -> EventBus:
    """The bus a bridge uses: in memory when alone, a ``RedisEventBus`` with ``redis_url``."""
    if not redis_url:
        return EventBus(ring_size, queue_size, ring_bytes=ring_bytes)
    return RedisEventBus(redis_url, ring_size, queue_size, ring_bytes=ring_bytes)


def _client(url: str, timeout: float) -> aioredis.Redis:
    # No retries inside the client: the loops here retry with their own back-off.
    return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=2.0,
                                   retry=Retry(NoBackoff(), 0), max_connections=REPLAYS + 4)


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float = 1.0, tries: int = 5) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those still running after ``grace``:
    a cancellation that lands inside redis-py's read timeout can be swallowed (seen with
    Python 3.11), and one cancel is then not enough."""
    for _ in range(tries):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=grace)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s ended with %r", task.get_name(), task.exception())
        elif not task.done():
            log.error("%s did not stop", task.get_name())


def describe_error(exc: BaseException) -> str:
    """A Redis error in one short line (for logs and /healthz)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160]


class RedisEventBus(EventBus):
    def __init__(self, url: str, ring_size: int = RING_SIZE, queue_size: int = QUEUE_BYTES,
                 ring_bytes: int = RING_BYTES, *, min_stream: int = MIN_STREAM,
                 min_stream_bytes: int = MIN_STREAM_BYTES, buffer_events: int = BUFFER_EVENTS,
                 buffer_bytes: int = BUFFER_BYTES) -> None:
        super().__init__(ring_size=1, queue_size=queue_size, ring_bytes=0)
        self.url = url
        self.replay_limit = ring_size
        self.stream_len = max(ring_size, min_stream, 1)
        self.stream_bytes = max(ring_bytes, min_stream_bytes)
        self.buffer_events = buffer_events
        self.buffer_bytes = buffer_bytes
        self.received = 0  # entries this bridge's reader took from the stream
        self.lost = 0  # events the local buffer could not keep (each reported in a gap entry)
        self._outbox: deque[_Out | _Lost] = deque()
        self._out_events = 0
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()  # the reader knows where it starts: the writer may write
        self._pos: tuple[int, int] | None = None  # the newest id the reader has seen
        self._placed = False  # _pos was set from the store at least once
        self._replaying: dict[Subscriber, _Held] = {}
        self._skip: dict[Subscriber, tuple[int, int]] = {}  # deliver only ids after these
        self._replay_slots = asyncio.Semaphore(REPLAYS)
        self._stream_bytes_now = 0
        self._read_problem: str | None = "not started"
        self._write_problem: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._db: aioredis.Redis | None = None
        self._reader: aioredis.Redis | None = None
        self._add: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._db = _client(self.url, 5.0)
        self._reader = _client(self.url, READ_BLOCK_MS / 1000 + 5.0)
        self._add = self._db.register_script(_ADD)
        self._read_problem = "connecting to Redis"
        self._tasks = [asyncio.create_task(self._read_loop(), name="events-reader"),
                       asyncio.create_task(self._write_loop(), name="events-writer")]
        try:
            await asyncio.wait_for(self._ready.wait(), START_WAIT)
        except TimeoutError:
            log.warning("events: Redis at %s is unreachable (%s); events are buffered until it answers",
                        self.url, self._read_problem)

    async def stop(self) -> None:
        deadline = time.monotonic() + FLUSH_WAIT
        while self._outbox and self._write_problem is None and self._ready.is_set() \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await stop_tasks(self._tasks)
        self._tasks = []
        for client in (self._db, self._reader):
            if client is not None:
                await client.aclose()
        self._db = self._reader = None
        self._ready.clear()
        self._read_problem = "stopped"

    @property
    def healthy(self) -> bool:
        return self._read_problem is None and self._write_problem is None

    @property
    def problem(self) -> str | None:
        why = self._write_problem or self._read_problem
        if why is None:
            return None
        waiting = f"; {self._out_events} events waiting to be published" if self._out_events else ""
        lost = f"; {self.lost} lost so far" if self.lost else ""
        return f"events: {why}{waiting}{lost}"

    @property
    def ring_bytes(self) -> int:
        """What the shared stream weighs, as of this bridge's last append."""
        return self._stream_bytes_now

    @property
    def buffered(self) -> int:
        """Events waiting locally to be appended to the stream."""
        return self._out_events

    # -- publishing ----------------------------------------------------------------------------

    def _emit(self, body: bytes, edge: str | None, plugin: str | None, topic: str,
              owner: str | None) -> None:
        fields = [b"b", body, b"t", topic.encode()]
        if edge is not None:
            fields += [b"e", edge.encode()]
        if plugin is not None:
            fields += [b"p", plugin.encode()]
        if owner is not None:
            fields += [b"o", owner.encode()]
        size = sum(len(f) for f in fields) + ENTRY_OVERHEAD
        self.published += 1
        if self._out_events >= self.buffer_events or self._out_bytes + size > self.buffer_bytes:
            self.lost += 1
            tail = self._outbox[-1] if self._outbox else None
            if isinstance(tail, _Lost) and not tail.sealed:
                tail.count += 1
            else:
                self._outbox.append(_Lost())
            if self.lost in (1, 10, 100, 1000) or self.lost % 10_000 == 0:
                log.warning("events: the local buffer is full (%d events, %d bytes); %d events lost so far "
                            "(reported to clients as a gap)", self._out_events, self._out_bytes, self.lost)
        else:
            self._outbox.append(_Out(fields, size))
            self._out_events += 1
            self._out_bytes += size
        self._wake.set()

    def _batch(self) -> list[_Out | _Lost]:
        batch: list[_Out | _Lost] = []
        size = 0
        for item in self._outbox:
            if batch and (len(batch) >= BATCH_EVENTS or size >= BATCH_BYTES):
                break
            if isinstance(item, _Lost):
                item.sealed = True
                size += ENTRY_OVERHEAD
            else:
                size += item.size
            batch.append(item)
        return batch

    async def _write_loop(self) -> None:
        await self._ready.wait()
        delay = RETRY_MIN
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._batch()
            args: list[bytes | int] = [self.stream_len, self.stream_bytes]
            for item in batch:
                out = item.entry() if isinstance(item, _Lost) else item
                args += [out.size, len(out.fields), *out.fields]
            try:
                _newest, _length, weight = await self._add(keys=[STREAM, META, SIZES], args=args)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._write_problem is None:
                    log.warning("events: cannot publish to Redis (%s); buffering", describe_error(exc))
                self._write_problem = f"cannot publish to Redis ({describe_error(exc)})"
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except Exception as exc:  # a bug must not end this bridge's events for good
                log.exception("events: publishing to the stream failed")
                self._write_problem = f"publishing failed ({describe_error(exc)})"
                await asyncio.sleep(RETRY_MAX)
                continue
            if self._write_problem is not None:
                log.info("events: publishing to Redis again")
            self._write_problem = None
            delay = RETRY_MIN
            self._stream_bytes_now = int(weight)
            for _ in batch:
                item = self._outbox.popleft()
                if isinstance(item, _Out):
                    self._out_events -= 1
                    self._out_bytes -= item.size

    # -- reading -------------------------------------------------------------------------------

    async def _place(self, db: aioredis.Redis) -> None:
        """Where the reader goes on: the store's newest id at first, else its own last id,
        unless the store lost its data meanwhile (then: the new store from its start)."""
        epoch, seq = await db.hmget(META, ["epoch", "seq"])
        newest = (int(epoch), int(seq or 0)) if epoch is not None else None
        if not self._placed:
            self._pos, self._placed = newest, True
            return
        pos = self._pos
        if pos is None:
            return
        if newest is None or newest[0] != pos[0] or newest < pos:
            self._lost_store()
            self._pos = (newest[0], 0) if newest is not None else None

    def _lost_store(self) -> None:
        log.warning("events: the Redis event store lost its data; telling this bridge's clients")
        self._skip.clear()
        self._local_gap(None, RESET)

    async def _read_loop(self) -> None:
        db = self._reader
        assert db is not None
        delay = RETRY_MIN
        placed = False
        while True:
            try:
                if not placed:
                    await self._place(db)
                    placed = True
                    self._ready.set()
                    if self._read_problem is not None and self._read_problem != "connecting to Redis":
                        log.info("events: reading from Redis again")
                    self._read_problem = None
                since = format_id(self._pos) if self._pos is not None else "0-0"
                reply: Any = await db.xread({STREAM: since}, count=READ_COUNT, block=READ_BLOCK_MS)
                delay = RETRY_MIN
                for raw_id, fields in _entries(reply):
                    self._take(raw_id, fields)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._read_problem is None:
                    log.warning("events: cannot read from Redis (%s); reconnecting", describe_error(exc))
                self._read_problem = f"cannot read from Redis ({describe_error(exc)})"
                placed = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except Exception as exc:  # a bug must not end this bridge's events for good
                log.exception("events: reading the stream failed")
                self._read_problem = f"reading the stream failed ({describe_error(exc)})"
                placed = False
                await asyncio.sleep(RETRY_MAX)

    def _take(self, raw_id: bytes, fields: dict[bytes, bytes]) -> None:
        key = parse_id(raw_id)
        if key is None:
            return
        pos = self._pos
        if pos is None:
            missed: int | None = key[1] - 1
        elif key[0] != pos[0]:  # a new store the reader did not see start: what went is uncounted
            self._lost_store()
            missed = 0
        else:
            missed = key[1] - pos[1] - 1
        if missed:
            self._local_gap(missed, TRIMMED)
        self._pos = key
        self.received += 1
        event = self._event(raw_id, fields, key)
        if event is not None:
            self._deliver(event)

    def _event(self, raw_id: bytes, fields: dict[bytes, bytes], key: tuple[int, int]) -> StreamEvent | None:
        body = fields.get(b"b")
        if body is None or b"\n" in body or b"\r" in body:
            log.warning("events: ignoring the malformed stream entry %r", raw_id)
            return None
        head = b"id: " + raw_id + (b"\nevent: gap" if fields.get(b"k") == b"gap" else b"")
        payload = head + b"\ndata: " + body + b"\n\n"
        edge, plugin, owner = fields.get(b"e"), fields.get(b"p"), fields.get(b"o")
        return StreamEvent(raw_id.decode("latin-1"), payload, edge.decode() if edge is not None else None,
                           plugin.decode() if plugin is not None else None,
                           fields.get(b"t", b"").decode(), owner.decode() if owner is not None else None, key)

    # -- fan-out -------------------------------------------------------------------------------

    def _deliver(self, event: StreamEvent) -> None:
        gap = event.topic == "gap"
        replaying, skip = self._replaying, self._skip
        for sub in self._subs:
            if replaying:
                held = replaying.get(sub)
                if held is not None:
                    self._hold(held, sub, event, len(event.payload))
                    continue
            if skip:
                after = skip.get(sub)
                if after is not None:
                    if event.key <= after:
                        continue
                    del skip[sub]
            if gap or sub.wants(event):
                sub.push(event.payload)

    @staticmethod
    def _hold(held: _Held, sub: Subscriber, item: StreamEvent | bytes, size: int) -> None:
        if held.size + size > sub.limit:
            held.dropped += 1
        else:
            held.items.append(item)
            held.size += size

    def _local_gap(self, missed: int | None, why: str) -> None:
        """A gap this bridge noticed itself (no id): told to each of its subscribers."""
        payload = _gap(missed, why)
        for sub in self._subs:
            held = self._replaying.get(sub)
            if held is not None:
                self._hold(held, sub, payload, len(payload))
            else:
                sub.push(payload)

    # -- subscribing ---------------------------------------------------------------------------

    def subscribe(self, principal: Principal, filters: Filters, last_id: int | None,
                  credential: str | None = None) -> Subscriber:
        """Live events only: a replay needs Redis, so it takes ``await open(...)``."""
        sub = Subscriber(principal, filters, limit=self.queue_size, credential=credential)
        if last_id is not None:
            sub.push(_gap(None, "replays need 'await bus.open(...)' on a shared bus"))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)
        self._skip.pop(sub, None)
        self._replaying.pop(sub, None)

    async def open(self, principal: Principal, filters: Filters, last_event_id: str | None,
                   credential: str | None = None) -> Subscriber:
        """Subscribe; with ``last_event_id``, first replay what the stream holds after it.

        The subscriber is registered before the replay starts: what the reader delivers
        meanwhile is held and added after the replay, without the events the replay gave.
        """
        sub = Subscriber(principal, filters, limit=self.queue_size, credential=credential)
        last = parse_id(last_event_id)
        self._subs.add(sub)
        if last is None:
            return sub
        held = self._replaying[sub] = _Held()
        after: tuple[int, int] | None = last
        try:
            async with self._replay_slots:
                after = await asyncio.wait_for(self._replay(sub, last), REPLAY_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("events: replay after %s failed (%s)", last_event_id, describe_error(exc))
            sub.push(_gap(None, NO_REPLAY))
        except BaseException:
            self.unsubscribe(sub)
            raise
        self._replaying.pop(sub, None)
        if after is not None:
            self._skip[sub] = after
        for item in held.items:
            if isinstance(item, bytes):
                sub.push(item)
                continue
            skip = self._skip.get(sub)
            if skip is not None:
                if item.key <= skip:
                    continue
                del self._skip[sub]
            if item.topic == "gap" or sub.wants(item):
                sub.push(item.payload)
        sub.dropped += held.dropped
        return sub

    async def _replay(self, sub: Subscriber, last: tuple[int, int]) -> tuple[int, int] | None:
        """Push what follows ``last`` (at most ``replay_limit`` events, a gap for the rest);
        returns the newest id the replay covered (None: the client's id is from a lost store)."""
        db = self._db
        if db is None:
            raise RedisError("the event bus is not started")
        epoch, seq = await db.hmget(META, ["epoch", "seq"])
        if epoch is None:  # the store holds nothing: the client's id is from one since lost
            sub.push(_gap(None, UNKNOWN))
            return None
        end = (int(epoch), int(seq or 0))
        if last == end:
            return end
        # Another epoch (a store since lost, an in-memory bridge's integer) or an id this store
        # never made: what the client missed is uncounted, and all the store holds is new to it.
        same = last[0] == end[0] and last < end
        start = max(last[1] if same else 0, end[1] - self.replay_limit)
        cursor = f"({end[0]}-{start}"
        first = True
        while True:
            page: Any = await db.xrange(STREAM, cursor, format_id(end), count=PAGE)
            if first:
                first = False
                head = parse_id(page[0][0]) if page else None
                first_seq = head[1] if head is not None else end[1] + 1
                if not same:
                    sub.push(_gap(None, UNKNOWN))
                elif first_seq - last[1] - 1 > 0:
                    sub.push(_gap(first_seq - last[1] - 1, TRIMMED))
            for raw_id, fields in page:
                key = parse_id(raw_id)
                event = self._event(raw_id, fields, key) if key is not None else None
                if event is not None and (event.topic == "gap" or sub.wants(event)):
                    sub.push(event.payload)
            if len(page) < PAGE:
                return end
            cursor = "(" + page[-1][0].decode("latin-1")
            if sub.queued >= sub.limit:  # full: the rest would only be dropped
                newest = parse_id(page[-1][0])
                sub.dropped += end[1] - (newest[1] if newest is not None else end[1])
                return end
