"""Tokens: clients (metrics, viewer, user, admin) and edge enrolment, stored hashed.

A token file (JSON, mode 600) holds SHA-256 digests only: tokens are 256-bit random
strings, so a plain digest is as strong as a slow hash here and costs microseconds per
request. ``ISTHMUS_ADMIN_TOKEN`` and ``ISTHMUS_EDGE_TOKEN`` add one token each from the
environment. The file is re-read when it changes, so ``isthmus token create`` takes
effect without a restart.

A token may carry ``expires`` (epoch seconds): from then on a lookup refuses it, and
``refresh()`` says so once, so the bridge closes what it opened as for a revocation.
When a token was last used is noted in memory on each lookup (once a minute per token at
most) and written every ``USED_FLUSH`` seconds, and at ``stop()``, to ``<token file>.used``
(the bridge never rewrites the file the CLI edits).

Several bridges share their tokens through Redis instead: ``redis_tokens.open_token_store``
gives this ``TokenStore`` without a Redis URL and a ``RedisTokenStore`` (the same lookups,
fed from Redis) with one. Both have ``await start()``/``await stop()`` and ``healthy``/``problem``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fnmatch
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..private_files import write_private
from ..types import Principal, Role
from .standalone import Standalone

log = logging.getLogger("isthmus.auth")

TOKEN_PREFIX = "ist_"
COOKIE_NAME = "isthmus_session"
EDGE_ROLE = "edge"
ROLES = ("metrics", "viewer", "user", "admin", EDGE_ROLE)  # what ``token create --role`` takes

USED_FLUSH = 30.0  # seconds between writes of the last-used times (only when some changed)
USED_STEP = 60  # seconds: a token's last use is noted at most this often (times are coarse)
LIFETIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LIFETIME = 10 * 366 * 86400


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_lifetime(text: str) -> int:
    """Seconds from ``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` (``token create --expires``)."""
    m = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw])\s*", text or "")
    if m is None:
        raise ValueError(f"{text!r} is not a lifetime: give a number and one unit, s, m, h, d or w "
                         "(e.g. 30d, 12h, 90m, 3600s, 2w)")
    seconds = int(m[1]) * LIFETIME_UNITS[m[2]]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a lifetime: it must be longer than 0")
    if seconds > MAX_LIFETIME:
        raise ValueError(f"{text!r} is too long a lifetime: at most {MAX_LIFETIME // 86400}d; "
                         "leave --expires out for a token that never expires")
    return seconds


@dataclass(frozen=True)
class EdgeGrant:
    """An enrolment token's right to register edges whose names match ``pattern``."""

    id: str
    pattern: str

    def allows(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass
class TokenIndex:
    """The lookups of a list of entries (revoked ones left out), by token digest."""

    clients: dict[str, Principal] = field(default_factory=dict)
    edges: dict[str, EdgeGrant] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # digest → token id (for last-used)
    expires: dict[str, float] = field(default_factory=dict)  # digest → epoch, for tokens that expire
    expiry_times: list[float] = field(default_factory=list)  # sorted: when refresh() must say so


class TokenStore(Standalone):
    def __init__(self, path: Path | None, *, admin_token: str | None = None,
                 edge_token: str | None = None, flush_every: float = USED_FLUSH) -> None:
        self.path = path
        self.flush_every = flush_every
        self._env_clients: dict[str, Principal] = {}
        self._env_edges: dict[str, EdgeGrant] = {}
        if admin_token:
            self._env_clients[digest(admin_token)] = Principal("admin", Role.admin, "env:admin")
        if edge_token:
            self._env_edges[digest(edge_token)] = EdgeGrant("env", "*")
        self._file_clients: dict[str, Principal] = {}
        self._file_edges: dict[str, EdgeGrant] = {}
        self._index = TokenIndex()
        self._next_expiry = math.inf
        self._changed = False
        self._used: dict[str, int] = {}  # token id → last use noted (epoch seconds)
        self._unsaved: dict[str, int] = {}  # the part of _used not written yet
        self._flusher: asyncio.Task[None] | None = None
        self._mtime: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._refresh(force=True)
        self._changed = False  # what the constructor loaded is the starting point, not a change

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Re-read the file now if it changed; True once after tokens changed or one expired
        (revocations to enforce), whichever lookup noticed the change first."""
        self._refresh(force=False, every=0.0)
        changed, self._changed = self._changed, False
        return self._expired_since() | changed

    def _refresh(self, force: bool = False, every: float = 1.0) -> bool:
        now = time.monotonic()
        if not force and now - self._checked < every:
            return False
        self._checked = now
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            changed = self._mtime is not None
            self._mtime = None
            if changed:
                self._load([])
            return changed
        mtime = (st.st_mtime_ns, st.st_size, st.st_ino)
        if mtime == self._mtime and not force:
            return False
        self._load(read_entries(self.path))
        self._mtime = mtime
        return True

    def _load(self, entries: list[dict[str, Any]]) -> None:
        """Serve ``entries`` from now on (beside the environment's tokens)."""
        index = index_entries(entries)
        if (index.clients != self._file_clients or index.edges != self._file_edges
                or index.expires != self._index.expires):
            self._changed = True
        self._index, self._file_clients, self._file_edges = index, index.clients, index.edges
        self._next_expiry = _following(index.expiry_times, time.time())

    def _expired_since(self) -> bool:
        """True once for each moment a token expired since the last call (one bisect when so)."""
        now = time.time()
        if now < self._next_expiry:
            return False
        self._next_expiry = _following(self._index.expiry_times, now)
        return True

    def _live(self, key: str, now: float) -> bool:
        expires = self._index.expires.get(key)
        return expires is None or now < expires

    def _note_use(self, key: str, now: float) -> None:
        """Remember when a stored token was used: O(1), in memory; written by the flush task."""
        token_id = self._index.ids.get(key)
        if token_id is not None and now - self._used.get(token_id, 0) >= USED_STEP:
            self._used[token_id] = self._unsaved[token_id] = int(now)

    def client(self, token: str | None) -> Principal | None:
        """The principal a client token stands for, or None."""
        if not token:
            return None
        return self.client_by_digest(digest(token))

    def client_by_digest(self, key: str) -> Principal | None:
        """The principal of the token whose digest is ``key``, or None when unknown, revoked or
        expired (re-reading the file at most once a second)."""
        self._refresh()
        principal = self._env_clients.get(key)
        if principal is not None:
            return principal
        principal = self._file_clients.get(key)
        if principal is None:
            return None
        now = time.time()
        if not self._live(key, now):
            return None
        self._note_use(key, now)
        return principal

    def edge_allowed(self, token: str | None, name: str) -> bool:
        """May an edge enrol as ``name`` with ``token``? (Counts as a use of the token.)"""
        if not token:
            return False
        self._refresh()
        key = digest(token)
        allowed = self.edge_allowed_digest(key, name)
        if allowed:
            self._note_use(key, time.time())
        return allowed

    def edge_allowed_digest(self, key: str, name: str) -> bool:
        grant = self._env_edges.get(key)
        if grant is None:
            grant = self._file_edges.get(key)
            if grant is None or not self._live(key, time.time()):
                return False
        return grant.allows(name)

    @property
    def has_edge_tokens(self) -> bool:
        self._refresh()
        return bool(self._env_edges or self._file_edges)

    @property
    def has_client_tokens(self) -> bool:
        self._refresh()
        return bool(self._env_clients or self._file_clients)

    # -- last used ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_every(), name="tokens-last-used")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush_used()

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            await self.flush_used()

    async def flush_used(self) -> None:
        """Write the last-used times noted since the last write (kept for the next try on failure)."""
        if not self._unsaved:
            return
        batch, self._unsaved = self._unsaved, {}
        try:
            await self._save_used(batch)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the bridge
            log.warning("tokens: cannot record when tokens were last used: %s", exc)
            for token_id, when in batch.items():
                self._unsaved[token_id] = max(when, self._unsaved.get(token_id, 0))

    async def _save_used(self, batch: dict[str, int]) -> None:
        if self.path is not None:
            await asyncio.to_thread(write_last_used, used_path(self.path), batch)

    def edge_grants(self) -> list[tuple[str, EdgeGrant]]:
        """The current enrolment grants, digest → grant (revoked and expired ones left out):
        what child tokens (``child_tokens``) are checked against."""
        self._refresh()
        now = time.time()
        return [*self._env_edges.items(),
                *((key, grant) for key, grant in self._file_edges.items() if self._live(key, now))]


def _following(times: list[float], now: float) -> float:
    """The first of the sorted ``times`` after ``now`` (infinity when none)."""
    i = bisect.bisect_right(times, now)
    return times[i] if i < len(times) else math.inf


def entry_expires(entry: dict[str, Any]) -> float | None:
    """An entry's ``expires``; one that is not a number fails closed (long expired)."""
    value = entry.get("expires")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(value)


def index_entries(entries: list[dict[str, Any]]) -> TokenIndex:
    """The lookups by token digest of the entries not revoked (expired ones included: they are
    refused at lookup time, so expiring needs no reload)."""
    index = TokenIndex()
    times: set[float] = set()
    for entry in entries:
        if entry.get("revoked"):
            continue
        key = entry["hash"]
        if entry["role"] == EDGE_ROLE:
            index.edges[key] = EdgeGrant(entry["id"], entry.get("edge") or "*")
        else:
            index.clients[key] = Principal(entry.get("name") or entry["id"], Role.parse(entry["role"]),
                                           entry.get("principal") or entry["id"])
        index.ids[key] = entry["id"]
        expires = entry_expires(entry)
        if expires is not None:
            index.expires[key] = expires
            times.add(expires)
    index.expiry_times = sorted(times)
    return index


# -- the token file ---------------------------------------------------------------------------

def read_entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return list(data.get("tokens", []))


def write_private_json(path: Path, data: Any) -> None:
    """Replace the file (mode 600) atomically; a planted temporary file is never used."""
    write_private(path, json.dumps(data, indent=2))


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    write_private_json(path, {"tokens": entries})


def used_path(path: Path) -> Path:
    """Where the bridge keeps the last-used times of the token file ``path``'s tokens."""
    return path.with_name(path.name + ".used")


def read_last_used(path: Path) -> dict[str, int]:
    """Token id → when it was last used (epoch seconds), from the file ``used_path`` names."""
    try:
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    used = data.get("used") if isinstance(data, dict) else None
    if not isinstance(used, dict):
        return {}
    return {k: int(v) for k, v in used.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def write_last_used(path: Path, batch: dict[str, int]) -> None:
    """Merge ``batch`` into the last-used file (the later time wins: several processes may write)."""
    try:
        used = read_last_used(path)
    except ValueError:
        used = {}  # a damaged file: these are hints, start over
    for token_id, when in batch.items():
        used[token_id] = max(when, used.get(token_id, 0))
    write_private_json(path, {"used": used})


def create_token(path: Path, role: str, name: str | None = None, edge: str | None = None,
                 principal: str | None = None, lifetime: int | None = None) -> tuple[str, dict[str, Any]]:
    """Add a token to the file; returns (the token, shown once; its entry).

    Without ``principal`` the token is its own principal (its id), so it owns what it
    creates alone; give several tokens one ``principal`` to let them share (rotation).
    ``lifetime`` (seconds) makes it expire; without it, it never does.
    """
    token, entry = new_entry(role, name=name, edge=edge, principal=principal, lifetime=lifetime)
    entries = read_entries(path)
    entries.append(entry)
    _write_entries(path, entries)
    return token, entry


def new_entry(role: str, name: str | None = None, edge: str | None = None,
              principal: str | None = None, lifetime: int | None = None) -> tuple[str, dict[str, Any]]:
    """A fresh token and its entry (stored nowhere yet); see ``create_token``."""
    if role != EDGE_ROLE:
        Role.parse(role)
    if lifetime is not None and not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"a token's lifetime must be 1 to {MAX_LIFETIME} seconds, not {lifetime}")
    token = new_token()
    token_id = "tok_" + secrets.token_hex(6)
    now = int(time.time())
    entry: dict[str, Any] = {
        "id": token_id,
        "name": name or (f"edge:{edge or '*'}" if role == EDGE_ROLE else f"{role}-{token_id[4:]}"),
        "role": role,
        "hash": digest(token),
        "created": now,
    }
    if lifetime is not None:
        entry["expires"] = now + lifetime
    if role == EDGE_ROLE:
        entry["edge"] = edge or "*"
    elif principal:
        entry["principal"] = principal
    return token, entry


def revoke_token(path: Path, token_id: str) -> bool:
    entries = read_entries(path)
    found = False
    for entry in entries:
        if entry["id"] == token_id:
            entry["revoked"] = int(time.time())
            found = True
    if found:
        _write_entries(path, entries)
    return found


def relative_time(when: float | None, now: float, none: str = "never") -> str:
    """``in 29d``, ``3m ago``, ``just now`` (for ``token list``); ``none`` when there is no time."""
    if when is None:
        return none
    delta = when - now
    seconds = int(abs(delta))
    if seconds < 60:
        return "just now" if delta <= 0 else f"in {seconds}s"
    size, unit = next((size, unit) for size, unit in ((86400, "d"), (3600, "h"), (60, "m")) if seconds >= size)
    span = f"{seconds // size}{unit}"
    return f"in {span}" if delta > 0 else f"{span} ago"


# -- reading credentials from a request --------------------------------------------------------

def credentials(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bool]:
    """(token, from_cookie) from an ASGI header list."""
    cookie_token = None
    for key, value in headers:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip(), False
        elif key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE_NAME and v:
                    cookie_token = v
    return cookie_token, cookie_token is not None


def same_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    """For cookie-authenticated unsafe requests: refuse cross-site ones (CSRF)."""
    host = origin = site = None
    for key, value in headers:
        if key == b"host":
            host = value.decode("latin-1")
        elif key == b"origin":
            origin = value.decode("latin-1")
        elif key == b"sec-fetch-site":
            site = value.decode("latin-1")
    if site is not None and site not in ("same-origin", "none"):
        return False
    if origin is not None and host is not None:
        return origin.split("://", 1)[-1] == host
    return True


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
