"""The edge directory: which bridge holds which edge, shared by several bridges through Redis.

Every bridge keeps a local cache of the edges the *other* bridges hold, so the request path
asks ``holder(name)`` (a dict look-up) and never Redis. Redis holds the truth and carries the
changes:

    {ns}:edges             hash  name -> "<seq> <bridge> <conn> <at> <name> <json>"
                                 (json: the holder's advertise URL, the edge's summary and the
                                 digest of its per-connection resume key)
    {ns}:seq               counter: every claim, release and departure takes the next number
    {ns}:bridge:<id>       the bridge's lease: its advertise URL, TTL ``lease`` seconds,
                           refreshed every lease/3
    {ns}:held:<id>         set of the names a bridge claimed (to remove a dead bridge's
                           entries in O(its edges), never O(all edges))
    {ns}:directory         channel: claims ("c"), releases ("r"), departures of a bridge ("g")
    {ns}:directory:<id>    channel to one bridge: probe questions ("p") and answers ("a")
    {ns}:manifest:<hash>   one plugin manifest, by content (claims carry only the hashes)

Claims and releases are Lua scripts: the hash write, the sequence number and the PUBLISH
happen at once, so every bridge sees the changes in the order Redis applied them, and the
sequence numbers make the cache converge whatever order a scan and the messages arrive in
(a message older than what the cache holds is ignored). The newest claim of a name wins
everywhere: the bridge that held it before sees a claim with a higher number than its own
and calls ``on_lost``, and the lead closes that link.

Liveness: a bridge that stops refreshing its lease (killed with -9, frozen, cut off from
Redis) is gone for the others once the lease key expires; each bridge checks the lease keys of
the bridges it knows once per ``check`` interval (one pipelined EXISTS per bridge: O(bridges),
never O(edges)), drops that bridge's edges from its cache and removes them from Redis. A
bridge that stops cleanly (``stop()``) deletes its lease and entries and announces it, so the
others forget its edges at once.

Redis going away: the cache keeps serving (``healthy`` is False, ``problem`` says why),
claims and releases are remembered, and on reconnection (with back-off) the bridge renews
its lease, writes its own claims back (the newest connection still wins: a conflicting
entry written meanwhile by another bridge is kept when it is newer), scans the hash again
(HSCAN, paged) and reports the differences through ``on_change``. For ``lease`` seconds
after a reconnection a bridge whose lease is missing is not yet taken for dead: after a Redis
restart every bridge needs a moment to write its lease back.

Scale: a claim is one script call, batched with the others waiting into one pipeline; the
only full scans are at start and after a reconnection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .auth import digest

log = logging.getLogger("isthmus.bridge.directory")

CHECK_INTERVAL = 1.0  # seconds between looks at the known bridges' leases (at most lease/5)
SOCKET_TIMEOUT = 3.0  # a Redis command that takes longer means Redis is unreachable
CONNECT_TIMEOUT = 3.0
BACKOFF = (0.1, 5.0)  # reconnection delay: first, largest (doubling, with jitter)
SCAN_PAGE = 1000
BATCH = 500  # claims/releases per pipeline
CHANGE_DELAY = 0.02  # on_change calls gather the changes of this many seconds
STOP_TIMEOUT = 2.0
MAX_POOL = 32  # Redis connections per directory (the pub/sub one included)
MAX_PROBE = 30.0
MANIFEST_TTL = 24 * 3600  # seconds a stored manifest outlives the last claim that used it
PROBE_SLACK = 1.0  # a probe's answer may arrive this long after the holder's prober gave up

Callback = Callable[..., Any]

# KEYS: edges, seq, held:<me>; ARGV: name, "<bridge> <conn> <at> <name> <json>", mode, bridge,
# conn, at, channel. mode "force": a new connection, always written. "keep": written back after
# a reconnection: left alone when already there, refused when another bridge holds a newer
# connection. "announce": like keep, but always written and published (our lease lapsed, so
# the others forgot our edges).
_CLAIM = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev and ARGV[3] ~= 'force' then
  local pseq, pb, pc, pat = string.match(prev, '^(%d+) (%S+) (%S+) (%S+) ')
  if pb == ARGV[4] and pc == ARGV[5] and ARGV[3] == 'keep' then return {2, pseq} end
  if pb ~= ARGV[4] and tonumber(pat) > tonumber(ARGV[6]) then return {0, prev} end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
end
local seq = string.format('%d', redis.call('INCR', KEYS[2]))
local value = seq .. ' ' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[7], 'c' .. value)
return {1, seq}
"""

# KEYS: edges, seq, held:<me>; ARGV: name, conn, bridge, channel. Removes the entry only when it
# is still this bridge's connection ``conn``.
_RELEASE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('SREM', KEYS[3], ARGV[1])
  return 0
end
local cb, cc = string.match(cur, '^%d+ (%S+) (%S+) ')
if cb ~= ARGV[3] then
  redis.call('SREM', KEYS[3], ARGV[1])
  return 0
end
if cc ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
local seq = string.format('%d', redis.call('INCR', KEYS[2]))
redis.call('PUBLISH', ARGV[4], 'r' .. seq .. ' ' .. ARGV[3] .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
return 1
"""

# KEYS: edges, seq, held:<id>, bridge:<id> (lease); ARGV: id, channel, force. Removes a bridge's
# lease and entries and announces its departure; without force only when its lease is gone
# (a bridge that came back in the meantime keeps its edges).
_GONE = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
redis.call('DEL', KEYS[4])
local n = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local cur = redis.call('HGET', KEYS[1], name)
  if cur and string.match(cur, '^%d+ (%S+) ') == ARGV[1] then
    redis.call('HDEL', KEYS[1], name)
    n = n + 1
  end
end
redis.call('DEL', KEYS[3])
local seq = string.format('%d', redis.call('INCR', KEYS[2]))
redis.call('PUBLISH', ARGV[2], 'g' .. seq .. ' ' .. ARGV[1])
return n
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Remote:
    """An edge held by another bridge (safe to show: no key material)."""

    bridge_id: str
    url: str  # the holding bridge's advertise URL (relay requests there)
    summary: dict[str, Any]
    conn_id: str
    since: float  # when the holding bridge claimed it (its wall clock)
    seq: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``claim`` did. ``seq`` is None when Redis was unreachable: the claim is kept and
    written when Redis returns. ``current`` is False when a newer claim elsewhere already won
    (``on_lost`` has been called)."""

    seq: int | None
    previous: Remote | None  # the other bridge's entry this claim replaced, as this bridge knew it
    current: bool = True


@dataclass(slots=True)
class _Own:
    conn: str
    payload: str  # "<bridge> <conn> <at> <name> <json>"
    summary: dict[str, Any]
    key_digest: str
    at: float
    seq: int | None = None


class EdgeDirectory:
    """Which bridge holds which edge (see the module docstring).

    ``on_lost(name, conn_id)``: another bridge claimed an edge this one holds (close that link).
    ``on_change(joined, left)``: the remote edges that appeared or changed (name -> summary) and
    those that no longer have a remote holder (a name in ``left`` may now be held by this
    bridge). Callbacks may be plain functions or coroutine functions; they run on the loop.
    """

    def __init__(self, redis_url: str, bridge_id: str, advertise_url: str, *, lease: float = 5.0,
                 namespace: str = "isthmus", check: float | None = None,
                 backoff: tuple[float, float] = BACKOFF) -> None:
        for what, value in (("bridge id", bridge_id), ("advertise URL", advertise_url), ("namespace", namespace)):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"the {what} may not be empty or contain whitespace: {value!r}")
        if lease <= 0:
            raise ValueError("the lease must be positive")
        self.redis_url = redis_url
        self.bridge_id = bridge_id
        self.advertise_url = advertise_url
        self.lease = lease
        self.check_interval = check if check is not None else min(CHECK_INTERVAL, lease / 5)
        self.backoff = backoff
        self.healthy = False
        self.problem: str | None = "not started"
        self.on_lost: Callback | None = None
        self.on_change: Callback | None = None
        self._prober: Callable[[str], Awaitable[bool]] | None = None
        self._ns = namespace
        self._edges_key = f"{namespace}:edges"
        self._seq_key = f"{namespace}:seq"
        self._channel = f"{namespace}:directory"
        self._inbox = self._channel_of(bridge_id)
        self._remote: dict[str, Remote] = {}
        self._keys: dict[str, str] = {}  # name -> resume key digest of the remote holder's connection
        self._by_bridge: dict[str, set[str]] = {}
        self._own: dict[str, _Own] = {}
        self._grace: dict[str, float] = {}  # bridge -> monotonic time until a missing lease is tolerated
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._queue: list[tuple[str, list[str], list[str], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._dirty = False  # a write failed while connected: write the own claims back
        self._probes: dict[str, asyncio.Future[bool]] = {}
        self._pending_changes: dict[str, dict[str, Any] | None] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._attempted = asyncio.Event()
        self._stopping = False

    # -- keys --------------------------------------------------------------------------------------

    def _lease_key(self, bridge: str) -> str:
        return f"{self._ns}:bridge:{bridge}"

    def _held_key(self, bridge: str) -> str:
        return f"{self._ns}:held:{bridge}"

    def _channel_of(self, bridge: str) -> str:
        return f"{self._ns}:directory:{bridge}"

    # -- the API -------------------------------------------------------------------------------------

    def set_prober(self, prober: Callable[[str], Awaitable[bool]]) -> None:
        """``async prober(name) -> bool``: does this bridge's edge ``name`` still answer? Used
        to answer other bridges' ``probe``; it should take at most about 5 s."""
        self._prober = prober

    async def start(self, wait: float = CONNECT_TIMEOUT + 2.0) -> None:
        """Connect, announce this bridge, fill the cache. Returns once connected, or after the
        first attempt failed (then ``healthy`` is False and it keeps trying in the background)."""
        if self._tasks:
            return
        self._stopping = False
        self._attempted.clear()
        self._tasks = [asyncio.create_task(self._run(), name=f"directory {self.bridge_id}"),
                       asyncio.create_task(self._write_loop(), name=f"directory writes {self.bridge_id}")]
        try:
            await asyncio.wait_for(self._attempted.wait(), wait)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        """Leave: delete this bridge's lease and entries and tell the others (at once)."""
        self._stopping = True
        await self._cancel_tasks()
        if not self._own and not self.healthy and self.problem == "not started":
            return
        client = self._connect()
        try:
            await asyncio.wait_for(self._gone_script(client, self.bridge_id, force=True), STOP_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("directory: could not remove this bridge's entries from Redis (%s); they go "
                        "when its lease expires", exc)
        finally:
            await client.aclose()
        self._own.clear()
        self.healthy = False
        self.problem = "stopped"

    async def abandon(self) -> None:
        """Stop without telling anyone (what ``kill -9`` leaves behind); for tests."""
        self._stopping = True
        await self._cancel_tasks()
        self.healthy = False
        self.problem = "abandoned"

    async def _cancel_tasks(self) -> None:
        tasks = self._tasks + list(self._background)
        self._tasks = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._fail_queue(ConnectionError("the directory stopped"))

    def holder(self, name: str) -> Remote | None:
        """The other bridge holding edge ``name``, from the cache (no I/O); None if none known."""
        return self._remote.get(name)

    def remote_edges(self) -> Mapping[str, Remote]:
        """A read-only live view of the edges held by other bridges (copy it to iterate across awaits)."""
        return MappingProxyType(self._remote)

    def own_edges(self) -> dict[str, str]:
        """This bridge's claims: name -> conn_id."""
        return {name: own.conn for name, own in self._own.items()}

    def verify_resume(self, name: str, key: str) -> bool:
        """Does ``key`` match the resume key of the remote connection holding ``name``?"""
        stored = self._keys.get(name)
        if not stored or not isinstance(key, str) or not key:
            return False
        return hmac.compare_digest(digest(key).encode(), stored.encode())

    async def probe(self, name: str, timeout: float = 5.0) -> bool:
        """Ask the bridge holding ``name`` whether that edge still answers. That bridge's prober
        gets ``timeout`` seconds; its answer may take ``PROBE_SLACK`` more to arrive. False (treat
        the edge as gone) when no other bridge holds it, its bridge is not listening (killed), it
        says no, it does not answer in time, or Redis cannot be reached (check ``healthy`` first
        to refuse instead in that case)."""
        remote = self._remote.get(name)
        client = self._client
        if remote is None or remote.bridge_id == self.bridge_id:
            return False
        if client is None or not self.healthy:
            log.warning("directory: cannot ask bridge %s about edge %s (Redis: %s); treating it as gone",
                        remote.bridge_id, name, self.problem)
            return False
        ident = secrets.token_hex(8)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._probes[ident] = answer
        question = b"p" + orjson.dumps({"id": ident, "n": name, "f": self.bridge_id, "t": timeout})
        try:
            async with asyncio.timeout(timeout + PROBE_SLACK):
                listeners = await client.publish(self._channel_of(remote.bridge_id), question)
                if not listeners:
                    log.info("directory: bridge %s (holding %s) is not listening", remote.bridge_id, name)
                    return False
                return await answer
        except (RedisError, OSError, TimeoutError):
            return False
        finally:
            self._probes.pop(ident, None)

    async def claim(self, name: str, conn_id: str, summary: dict[str, Any], key_digest: str) -> Claim:
        """This bridge now holds edge ``name`` over connection ``conn_id`` (call it again with the
        same ``conn_id`` when the summary changes). Call it after the link is in the registry:
        ``on_lost`` may fire before this returns. ``conn_id`` is public (not the resume key)."""
        for what, value in (("edge name", name), ("connection id", conn_id)):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"the {what} may not be empty or contain whitespace: {value!r}")
        at = time.time()
        body = orjson.dumps({"u": self.advertise_url, "s": summary, "k": key_digest}).decode()
        own = _Own(conn_id, f"{self.bridge_id} {conn_id} {at!r} {name} {body}", summary, key_digest, at)
        self._own[name] = own
        previous = self._remote.get(name)
        if previous is not None:
            self._forget(name)
        if self._client is None:
            return Claim(None, previous)
        try:
            result = await self._write("claim", self._claim_keys(), [name, own.payload, "force",
                                                                    self.bridge_id, conn_id, repr(at), self._channel])
        except (RedisError, OSError) as exc:
            log.warning("directory: claiming %s failed (%s); it is written when Redis answers again", name, exc)
            self._dirty = True
            return Claim(None, previous)
        seq = int(result[1])
        return Claim(seq, previous, self._settle(name, own, seq))

    async def release(self, name: str, conn_id: str) -> bool:
        """Forget edge ``name`` if this bridge still holds it over ``conn_id``; True when the
        shared entry was removed now (False also when Redis is down: it is removed on reconnection)."""
        own = self._own.get(name)
        if own is not None and own.conn == conn_id:
            del self._own[name]
        if self._client is None:
            return False
        try:
            done = await self._write("release", self._claim_keys(), [name, conn_id, self.bridge_id, self._channel])
        except (RedisError, OSError):
            self._dirty = True
            return False
        return bool(done)

    # -- claims: bookkeeping ---------------------------------------------------------------------------

    def _claim_keys(self) -> list[str]:
        return [self._edges_key, self._seq_key, self._held_key(self.bridge_id)]

    def _settle(self, name: str, own: _Own, seq: int) -> bool:
        """Our claim got ``seq``: keep the highest, and lose to a newer remote claim seen meanwhile."""
        if self._own.get(name) is not own:
            return False
        own.seq = seq if own.seq is None else max(own.seq, seq)
        remote = self._remote.get(name)
        if remote is not None:
            if remote.seq > own.seq:
                self._lose(name, own)
                return False
            self._forget(name)
        return True

    def _lose(self, name: str, own: _Own) -> None:
        if self._own.get(name) is own:
            del self._own[name]
        log.warning("directory: edge %s (connection %s) was claimed by another bridge; closing ours",
                    name, own.conn)
        self._call(self.on_lost, name, own.conn)

    # -- the cache -----------------------------------------------------------------------------------

    def _remember(self, name: str, remote: Remote, key: str) -> None:
        old = self._remote.get(name)
        if old is not None and old.bridge_id != remote.bridge_id:
            self._unindex(name, old.bridge_id)
        self._remote[name] = remote
        self._keys[name] = key
        self._by_bridge.setdefault(remote.bridge_id, set()).add(name)
        self._note(name, remote.summary)

    def _forget(self, name: str) -> None:
        old = self._remote.pop(name, None)
        self._keys.pop(name, None)
        if old is not None:
            self._unindex(name, old.bridge_id)
            self._note(name, None)

    def _unindex(self, name: str, bridge: str) -> None:
        names = self._by_bridge.get(bridge)
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_bridge[bridge]

    def _drop_bridge(self, bridge: str, before: int | None = None) -> int:
        names = [n for n in self._by_bridge.get(bridge, ()) if before is None or self._remote[n].seq < before]
        for name in names:
            self._forget(name)
        self._grace.pop(bridge, None)
        return len(names)

    def _note(self, name: str, summary: dict[str, Any] | None) -> None:
        self._pending_changes[name] = summary
        if self._flush is None and self.on_change is not None:
            self._flush = asyncio.get_running_loop().call_later(CHANGE_DELAY, self._flush_changes)
        elif self.on_change is None:
            self._pending_changes.clear()

    def _flush_changes(self) -> None:
        self._flush = None
        changes, self._pending_changes = self._pending_changes, {}
        joined = {n: s for n, s in changes.items() if s is not None}
        left = [n for n, s in changes.items() if s is None]
        if joined or left:
            self._call(self.on_change, joined, left)

    def _call(self, callback: Callback | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
        except Exception:
            log.exception("directory: a callback failed")
            return
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("directory: a background task failed", exc_info=task.exception())

    # -- messages ------------------------------------------------------------------------------------

    def _apply_entry(self, value: str) -> None:
        """A claim (from a message or a scan): "<seq> <bridge> <conn> <at> <name> <json>"."""
        seq_text, bridge, conn, at, name, body = value.split(" ", 5)
        seq = int(seq_text)
        if bridge == self.bridge_id:
            cached = self._remote.get(name)
            if cached is not None and cached.seq < seq:
                self._forget(name)
            return
        own = self._own.get(name)
        if own is not None and own.seq is not None:
            if seq <= own.seq:
                return  # older than our claim
            self._lose(name, own)
        cached = self._remote.get(name)
        if cached is not None and cached.seq >= seq:
            return
        data = orjson.loads(body)
        self._remember(name, Remote(bridge, str(data["u"]), dict(data["s"]), conn, float(at), seq), str(data["k"]))

    def _apply_release(self, text: str) -> None:
        seq_text, bridge, conn, name = text.split(" ", 3)
        cached = self._remote.get(name)
        if cached is not None and cached.bridge_id == bridge and cached.conn_id == conn and cached.seq < int(seq_text):
            self._forget(name)

    def _apply_gone(self, text: str) -> None:
        seq_text, bridge = text.split(" ", 1)
        if bridge != self.bridge_id:
            dropped = self._drop_bridge(bridge, before=int(seq_text))
            if dropped:
                log.info("directory: bridge %s left; forgot its %d edges", bridge, dropped)

    def _on_message(self, channel: str, data: bytes) -> None:
        kind, rest = data[:1], data[1:]
        try:
            if kind == b"c":
                self._apply_entry(rest.decode())
            elif kind == b"r":
                self._apply_release(rest.decode())
            elif kind == b"g":
                self._apply_gone(rest.decode())
            elif kind == b"p" and channel == self._inbox:
                self._spawn(self._answer(orjson.loads(rest)))
            elif kind == b"a" and channel == self._inbox:
                answer = orjson.loads(rest)
                waiter = self._probes.get(str(answer.get("id")))
                if waiter is not None and not waiter.done():
                    waiter.set_result(bool(answer.get("ok")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("directory: ignored a malformed message on %s: %s", channel, exc)

    async def _answer(self, question: dict[str, Any]) -> None:
        name, asker = str(question.get("n")), str(question.get("f"))
        timeout = min(float(question.get("t") or 5.0), MAX_PROBE)
        alive = False
        if name in self._own:
            if self._prober is None:
                alive = True  # nothing to ask: we hold it, so it is connected
            else:
                try:
                    alive = bool(await asyncio.wait_for(self._prober(name), timeout))
                except TimeoutError:
                    alive = False
                except Exception:
                    log.exception("directory: the prober failed for %s", name)
                    alive = False
        client = self._client
        if client is None or any(c.isspace() for c in asker) or not asker:
            return
        try:
            await client.publish(self._channel_of(asker), b"a" + orjson.dumps({"id": question.get("id"),
                                                                                "ok": alive}))
        except (RedisError, OSError) as exc:
            log.info("directory: could not answer bridge %s's probe of %s: %s", asker, name, exc)

    # -- manifests, stored once each by content ---------------------------------------------------------

    async def put_manifests(self, items: dict[str, bytes]) -> None:
        """Store plugin manifests under their content hashes (``{ns}:manifest:<hash>``) for a
        day, renewed by every claim that uses them; identical manifests are stored once, and
        those no edge announces any more expire. Best effort: Redis down means not stored now."""
        client = self._client
        if client is None or not items:
            return
        pipe = client.pipeline(transaction=False)
        for key, value in items.items():
            pipe.set(f"{self._ns}:manifest:{key}", value, ex=MANIFEST_TTL)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.info("directory: storing %d manifests failed: %s", len(items), exc)

    async def get_manifests(self, keys: list[str]) -> dict[str, bytes]:
        """The stored manifests of ``keys`` (those Redis holds)."""
        client = self._client
        if client is None or not keys:
            return {}
        try:
            values = await client.mget([f"{self._ns}:manifest:{key}" for key in keys])
        except (RedisError, OSError) as exc:
            log.info("directory: reading %d manifests failed: %s", len(keys), exc)
            return {}
        return {key: value.encode() if isinstance(value, str) else value
                for key, value in zip(keys, values, strict=True) if value is not None}

    # -- writes ----------------------------------------------------------------------------------------

    async def _write(self, script: str, keys: list[str], args: list[str]) -> Any:
        if self._client is None:
            raise ConnectionError(f"Redis is unreachable: {self.problem}")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, fut))
        self._wake.set()
        return await fut

    def _fail_queue(self, exc: Exception) -> None:
        queue, self._queue = self._queue, []
        for *_, fut in queue:
            if not fut.done():
                fut.set_exception(exc)

    async def _write_loop(self) -> None:
        """Send the waiting claims and releases together, one pipeline per batch."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                client = self._client
                if client is None:
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(ConnectionError(f"Redis is unreachable: {self.problem}"))
                    continue
                pipe = client.pipeline(transaction=False)
                for script, keys, args, _ in batch:
                    await self._scripts[script](keys=keys, args=args, client=pipe)
                results: list[Any]
                try:
                    results = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError) as exc:
                    results = [exc] * len(batch)
                for result, (*_, fut) in zip(results, batch, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)

    async def _gone_script(self, client: aioredis.Redis, bridge: str, *, force: bool) -> int:
        script = client.register_script(_GONE)
        keys = [self._edges_key, self._seq_key, self._held_key(bridge), self._lease_key(bridge)]
        return int(await script(keys=keys, args=[bridge, self._channel, "1" if force else "0"]))

    # -- the connection --------------------------------------------------------------------------------

    def _connect(self) -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url, max_connections=MAX_POOL, timeout=SOCKET_TIMEOUT, socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT, retry=Retry(NoBackoff(), 0))
        return aioredis.Redis.from_pool(pool)

    async def _run(self) -> None:
        """Keep a session with Redis; after a failure, back off and start a new one."""
        delay = self.backoff[0]
        while True:
            began = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure ends the session; the next one resyncs
                if self.healthy or self.problem in (None, "not started"):
                    log.warning("directory: lost Redis at %s: %s; working from the cache and reconnecting",
                                self.redis_url, exc)
                self.healthy = False
                self.problem = f"Redis unreachable: {exc or type(exc).__name__}"
            finally:
                self._client = None
                self._attempted.set()
            if time.monotonic() - began > 2 * self.backoff[1]:
                delay = self.backoff[0]
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # jitter
            delay = min(delay * 2, self.backoff[1])

    async def _session(self) -> None:
        client = self._connect()
        pubsub: Any = client.pubsub(ignore_subscribe_messages=True)  # redis-py leaves PubSub untyped
        tasks: list[asyncio.Task[Any]] = []
        try:
            await pubsub.subscribe(self._channel, self._inbox)
            self._scripts = {"claim": client.register_script(_CLAIM), "release": client.register_script(_RELEASE)}
            lapsed = not await self._renew(client)
            await self._write_back(client, announce=lapsed)
            await self._resync(client)
            self._client = client
            self._dirty = False
            if any(own.seq is None for own in self._own.values()):  # claimed while this session began
                await self._write_back(client, announce=False, pending_only=True)
            if not self.healthy:
                log.info("directory: connected to Redis at %s as bridge %s (%d remote edges)",
                         self.redis_url, self.bridge_id, len(self._remote))
            self.healthy, self.problem = True, None
            self._attempted.set()
            tasks = [asyncio.create_task(self._listen(pubsub)), asyncio.create_task(self._keep_lease(client)),
                     asyncio.create_task(self._watch(client))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("the directory's session ended")
        finally:
            self._client = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for closing in (pubsub.aclose(), client.aclose()):
                try:
                    await asyncio.wait_for(closing, 1.0)
                except (RedisError, OSError, TimeoutError):
                    pass

    async def _renew(self, client: aioredis.Redis) -> bool:
        """Refresh our lease; False when it had expired (the others forgot our edges)."""
        millis = int(self.lease * 1000)
        if await client.set(self._lease_key(self.bridge_id), self.advertise_url, px=millis, xx=True):
            return True
        await client.set(self._lease_key(self.bridge_id), self.advertise_url, px=millis)
        return False

    async def _write_back(self, client: aioredis.Redis, *, announce: bool, pending_only: bool = False) -> None:
        """Write our claims back after a reconnection (or the ones a failed write left out)."""
        mode = "announce" if announce else "keep"
        items = [(n, o) for n, o in self._own.items() if not pending_only or o.seq is None]
        script = self._scripts["claim"]
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            pipe = client.pipeline(transaction=False)
            for name, own in batch:
                await script(keys=self._claim_keys(), args=[name, own.payload, mode, self.bridge_id, own.conn,
                                                            repr(own.at), self._channel], client=pipe)
            results = await pipe.execute()
            for (name, own), (status, value) in zip(batch, results, strict=True):
                if self._own.get(name) is not own:
                    continue
                if int(status) == 0:
                    text = value.decode() if isinstance(value, bytes) else str(value)
                    log.warning("directory: edge %s connected to bridge %s meanwhile; ours is closed",
                                name, text.split(" ", 2)[1])
                    self._lose(name, own)
                else:
                    own.seq = int(value) if own.seq is None else max(own.seq, int(value))
        if items:
            log.info("directory: wrote back %d claims of this bridge (%s)", len(items), mode)

    async def _resync(self, client: aioredis.Redis) -> None:
        """Rebuild the cache from a full scan (after a (re)connection), report the differences."""
        fresh: dict[str, str] = {}
        mine: dict[str, str] = {}
        cursor = 0
        while True:
            cursor, page = await client.hscan(self._edges_key, cursor, count=SCAN_PAGE)
            assert isinstance(page, dict)
            for raw_name, raw_value in page.items():
                name, value = _text(raw_name), _text(raw_value)
                if value.split(" ", 2)[1] == self.bridge_id:
                    mine[name] = value
                else:
                    fresh[name] = value
            if cursor == 0:
                break
        bridges = {value.split(" ", 2)[1] for value in fresh.values()}
        now = time.monotonic()
        known = set(self._by_bridge)
        alive = await self._leases(client, bridges | known)
        # Entries gone from Redis: dropped, unless their bridge may be writing them back (its
        # lease is missing just after a reconnection, as after a Redis restart).
        for bridge in known:
            if not alive.get(bridge):
                self._grace.setdefault(bridge, now + self.lease)
        for name in [n for n in self._remote if n not in fresh]:
            bridge = self._remote[name].bridge_id
            if alive.get(bridge) or self._grace.get(bridge, 0.0) <= now:
                self._forget(name)
        for name, value in fresh.items():
            try:
                cached = self._remote.get(name)
                if cached is not None and int(value.split(" ", 1)[0]) < cached.seq:
                    self._forget(name)  # the counter restarted with Redis: the scan is the truth
                self._apply_entry(value)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("directory: ignored a malformed entry for %s: %s", name, exc)
        for bridge in bridges:
            if not alive.get(bridge) and bridge not in self._grace:
                self._bury(client, bridge)
        # Our own entries that we no longer hold (released or lost while Redis was away).
        stale = [(name, value.split(" ", 3)[2]) for name, value in mine.items()
                 if name not in self._own or self._own[name].conn != value.split(" ", 3)[2]]
        if stale:
            pipe = client.pipeline(transaction=False)
            for name, conn in stale:
                await self._scripts["release"](keys=self._claim_keys(),
                                               args=[name, conn, self.bridge_id, self._channel], client=pipe)
            await pipe.execute()

    async def _leases(self, client: aioredis.Redis, bridges: set[str]) -> dict[str, bool]:
        if not bridges:
            return {}
        order = sorted(bridges)
        pipe = client.pipeline(transaction=False)
        for bridge in order:
            pipe.exists(self._lease_key(bridge))
        return {bridge: bool(found) for bridge, found in zip(order, await pipe.execute(), strict=True)}

    def _bury(self, client: aioredis.Redis, bridge: str) -> None:
        """A bridge's lease expired: forget its edges here and remove them from Redis."""
        dropped = self._drop_bridge(bridge)
        if dropped:
            log.warning("directory: bridge %s stopped renewing its lease; its %d edges are gone", bridge, dropped)

        async def tidy() -> None:
            try:
                await self._gone_script(client, bridge, force=False)
            except (RedisError, OSError) as exc:
                log.info("directory: removing dead bridge %s's entries failed: %s", bridge, exc)

        self._spawn(tidy())

    async def _listen(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            self._on_message(channel.decode() if isinstance(channel, bytes) else str(channel), message["data"])

    async def _keep_lease(self, client: aioredis.Redis) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._stopping:
                return
            if not await self._renew(client):
                log.warning("directory: this bridge's lease had expired (stalled?); announcing its edges again")
                await self._write_back(client, announce=True)
            elif self._dirty or any(own.seq is None for own in self._own.values()):
                self._dirty = False
                await self._write_back(client, announce=False, pending_only=True)

    async def _watch(self, client: aioredis.Redis) -> None:
        """Once per check interval: the known bridges' leases, and our own subscription."""
        while True:
            await asyncio.sleep(self.check_interval)
            known = set(self._by_bridge) | set(self._grace)
            pipe = client.pipeline(transaction=False)
            order = sorted(known)
            for bridge in order:
                pipe.exists(self._lease_key(bridge))
            pipe.pubsub_numsub(self._inbox)
            results = await pipe.execute()
            now = time.monotonic()
            for bridge, found in zip(order, results, strict=False):
                if found:
                    self._grace.pop(bridge, None)
                elif self._grace.get(bridge, 0.0) <= now:
                    self._bury(client, bridge)
            subscribers = results[-1]
            if not subscribers or not int(subscribers[0][1]):
                raise ConnectionError("this bridge's subscription vanished")
