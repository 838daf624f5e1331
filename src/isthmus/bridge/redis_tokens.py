"""Tokens shared by several bridges through Redis (``isthmus bridge --redis``).

    tokens = open_token_store(path, admin_token=..., edge_token=..., redis_url=settings.redis)
    await tokens.start()     # the bridge's startup (a no-op for the file store); ``await tokens.stop()``
    tokens.refresh()         # as today: True once after the shared tokens changed
    tokens.healthy, tokens.problem

The entries are the token file's (id, name, role, hash, created, expires, edge, principal,
revoked) as JSON in one Redis hash, ``isthmus:tokens`` (id → entry), with a version counter,
``isthmus:tokens:version``, bumped by every change. Lookups stay in memory: a background
task reads the counter every ``POLL`` seconds and reloads the hash when it moved, so a
revocation made anywhere reaches every bridge's ``refresh()`` within a second.
``ISTHMUS_ADMIN_TOKEN``/``ISTHMUS_EDGE_TOKEN`` stay local to the process, as with a file.
Expiry and last-used work as with a file (see ``auth``), except that the last-used times go
to the hash ``isthmus:tokens:used`` (id → epoch seconds; the later time wins), so that every
bridge's uses of a token add up to one time.

Merging (by id) never un-revokes: an entry revoked on either side ends up revoked. The
bridge merges its local token file into Redis when it starts and whenever the file changes
(so a token made with ``isthmus token create`` without ``--redis`` on a bridge's host still
works, and a revocation made there still holds), and merges the entries it last loaded when
it finds Redis empty (a restart without persistence): tokens are removed by revoking them,
not by deleting the hash.

If Redis is unreachable the bridge goes on with the tokens it loaded last (at start: its
local file's), ``healthy`` is False and ``problem`` says why, and it reloads when Redis is back.

``create_token``, ``revoke_token`` and ``read_entries`` here are the token file's functions
for the shared store (synchronous, for ``isthmus token ... --redis URL``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from . import auth
from .auth import USED_FLUSH, TokenStore, index_entries, new_entry
from .redis_events import describe_error, stop_tasks

log = logging.getLogger("isthmus.auth")

HASH = "isthmus:tokens"
VERSION = "isthmus:tokens:version"
USED = "isthmus:tokens:used"
POLL = 0.2  # seconds between looks at the version counter
FILE_CHECK = 1.0  # seconds between looks at the local token file
START_WAIT = 2.0
RETRY_MAX = 2.0

# KEYS: hash, version. ARGV: id, entry JSON, id, entry JSON, ... Adds the entries Redis does
# not hold and revokes those revoked in ARGV; never un-revokes. Returns how many changed.
_MERGE = """
local changed = 0
for i = 1, #ARGV, 2 do
  local id, new = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], id)
  if not cur then
    redis.call('HSET', KEYS[1], id, new)
    changed = changed + 1
  else
    local n = cjson.decode(new)
    if n['revoked'] and n['revoked'] ~= cjson.null then
      local c = cjson.decode(cur)
      if not c['revoked'] or c['revoked'] == cjson.null then
        c['revoked'] = n['revoked']
        redis.call('HSET', KEYS[1], id, cjson.encode(c))
        changed = changed + 1
      end
    end
  end
end
if changed > 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('INCR', KEYS[2])
end
return changed
"""

# KEYS: hash, version. ARGV: id, now. Returns 1 if the token exists (revoked now or before).
_REVOKE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if not c['revoked'] or c['revoked'] == cjson.null then
  c['revoked'] = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
  redis.call('INCR', KEYS[2])
end
return 1
"""


# KEYS: used. ARGV: id, epoch, id, epoch, ... Keeps the later of the stored and the given time.
_USED = """
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') or 0
  if cur < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


def open_token_store(path: Path | None, *, admin_token: str | None = None, edge_token: str | None = None,
                     redis_url: str | None = None) -> TokenStore:
    """The bridge's token store: the file (``auth.TokenStore``), or Redis when ``redis_url``."""
    if not redis_url:
        return TokenStore(path, admin_token=admin_token, edge_token=edge_token)
    return RedisTokenStore(path, redis_url=redis_url, admin_token=admin_token, edge_token=edge_token)


def _decode(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        try:
            entry = json.loads(value)
        except ValueError:
            log.warning("tokens: ignoring the malformed entry %r in Redis", key)
            continue
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise ValueError("not an entry")
            index_entries([entry])  # the fields a lookup needs are there and make sense
        except (ValueError, KeyError, TypeError):
            log.warning("tokens: ignoring the malformed entry %r in Redis", key)
            continue
        entries[entry["id"]] = entry
    return entries


def _merge_args(entries: list[dict[str, Any]]) -> list[str]:
    args: list[str] = []
    for entry in entries:
        if isinstance(entry.get("id"), str):
            args += [entry["id"], json.dumps(entry, separators=(",", ":"))]
    return args


class RedisTokenStore(TokenStore):
    """A TokenStore whose entries come from Redis (see the module's docstring)."""

    def __init__(self, path: Path | None, *, redis_url: str, admin_token: str | None = None,
                 edge_token: str | None = None, poll: float = POLL, flush_every: float = USED_FLUSH) -> None:
        self.redis_url = redis_url
        self.poll = poll
        self._entries: dict[str, dict[str, Any]] = {}  # the shared entries last loaded, revoked included
        self._version: bytes | None = None
        self._loaded = False
        self._changed = False
        self._file_seen: tuple[int, int, int] | None = None
        self._file_checked = 0.0
        self._problem: str | None = "not started"
        self._db: aioredis.Redis | None = None
        self._merge: Any = None
        self._record_used: Any = None
        self._task: asyncio.Task[None] | None = None
        super().__init__(path, admin_token=admin_token, edge_token=edge_token, flush_every=flush_every)
        # Until Redis answers, the local file's tokens are the ones served.
        self._apply({e["id"]: e for e in self._read_file() if isinstance(e.get("id"), str)})

    # -- what the bridge calls -----------------------------------------------------------------

    def _refresh(self, force: bool = False, every: float = 1.0) -> bool:
        return False  # no file reads on the request path: the background task keeps things current

    @property
    def healthy(self) -> bool:
        return self._problem is None

    @property
    def problem(self) -> str | None:
        return None if self._problem is None else f"tokens: {self._problem}"

    async def start(self) -> None:
        if self._task is not None:
            return
        self._db = aioredis.Redis.from_url(self.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0,
                                           retry=AsyncRetry(NoBackoff(), 0))
        self._merge = self._db.register_script(_MERGE)
        self._record_used = self._db.register_script(_USED)
        try:
            await asyncio.wait_for(self._sync(), START_WAIT)
            self._problem = None
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            self._problem = f"cannot read the shared tokens from Redis ({describe_error(exc)})"
            log.warning("tokens: %s; serving the local token file's tokens until it answers", self._problem)
        self._changed = False  # what start() loaded is the starting point, not a change
        self._task = asyncio.create_task(self._run(), name="tokens-redis")
        await super().start()

    async def stop(self) -> None:
        await super().stop()  # the last last-used times, while Redis is still open
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
        if self._db is not None:
            await self._db.aclose()
            self._db = None

    # -- keeping up with Redis -----------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.poll
        while True:
            await asyncio.sleep(delay)
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ValueError) as exc:
                if self._problem is None:
                    log.warning("tokens: cannot read the shared tokens from Redis (%s); serving the last "
                                "ones loaded", describe_error(exc))
                self._problem = f"cannot read the shared tokens from Redis ({describe_error(exc)})"
                delay = min(max(delay * 2, self.poll), RETRY_MAX)
                continue
            except Exception as exc:  # a bug must not freeze this bridge's tokens for good
                log.exception("tokens: reloading the shared tokens failed")
                self._problem = f"reloading the shared tokens failed ({describe_error(exc)})"
                delay = RETRY_MAX
                continue
            if self._problem is not None:
                log.info("tokens: reading the shared tokens from Redis again")
            self._problem = None
            delay = self.poll

    async def _sync(self) -> None:
        db = self._db
        assert db is not None
        await self._merge_file()
        version = await db.get(VERSION)
        if version is None:  # a new (or emptied) store: give it what this bridge knows
            known = list(self._entries.values())
            if known:
                log.warning("tokens: Redis holds no tokens; restoring the %d entries this bridge knows", len(known))
            await self._merge(keys=[HASH, VERSION], args=_merge_args(known))
            version = await db.get(VERSION)
        if self._loaded and version == self._version:
            return
        async with db.pipeline(transaction=True) as pipe:
            pipe.get(VERSION)
            pipe.hgetall(HASH)
            version, raw = await pipe.execute()
        self._apply(_decode(raw))
        self._version, self._loaded = version, True

    async def _merge_file(self) -> None:
        """Merge the local token file into Redis when it is new or changed."""
        if self.path is None or time.monotonic() - self._file_checked < FILE_CHECK:
            return
        self._file_checked = time.monotonic()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        if seen == self._file_seen:
            return
        entries = self._read_file()
        if entries:
            changed = await self._merge(keys=[HASH, VERSION], args=_merge_args(entries))
            if changed:
                log.info("tokens: merged %d entries of %s into Redis", changed, self.path)
        self._file_seen = seen

    def _read_file(self) -> list[dict[str, Any]]:
        if self.path is None:
            return []
        try:
            return auth.read_entries(self.path)
        except (OSError, ValueError) as exc:
            log.warning("tokens: cannot read %s: %s", self.path, exc)
            return []

    def _apply(self, entries: dict[str, dict[str, Any]]) -> None:
        self._load(list(entries.values()))
        self._entries = entries

    async def _save_used(self, batch: dict[str, int]) -> None:
        if self._record_used is None:
            raise RuntimeError("the token store is not started")
        args: list[str | int] = []
        for token_id, when in batch.items():
            args += [token_id, when]
        await self._record_used(keys=[USED], args=args)


# -- the shared store for the CLI (synchronous) ------------------------------------------------

def _connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0, retry=Retry(NoBackoff(), 0))


def create_token(url: str, role: str, name: str | None = None, edge: str | None = None,
                 principal: str | None = None, lifetime: int | None = None) -> tuple[str, dict[str, Any]]:
    """Add a token to the shared store; returns (the token, shown once; its entry)."""
    token, entry = new_entry(role, name=name, edge=edge, principal=principal, lifetime=lifetime)
    with _connect(url) as db:
        db.register_script(_MERGE)(keys=[HASH, VERSION], args=_merge_args([entry]))
    return token, entry


def revoke_token(url: str, token_id: str) -> bool:
    with _connect(url) as db:
        return bool(db.register_script(_REVOKE)(keys=[HASH, VERSION], args=[token_id, int(time.time())]))


def read_entries(url: str) -> list[dict[str, Any]]:
    """The shared entries, oldest first."""
    with _connect(url) as db:
        raw: Any = db.hgetall(HASH)
    return sorted(_decode(raw).values(), key=lambda e: (e.get("created") or 0, e["id"]))


def read_last_used(url: str) -> dict[str, int]:
    """Token id → when a bridge last saw it used (epoch seconds)."""
    with _connect(url) as db:
        raw: Any = db.hgetall(USED)
    used: dict[str, int] = {}
    for key, value in raw.items():
        try:
            used[key.decode()] = int(value)
        except (UnicodeDecodeError, ValueError):
            continue
    return used
