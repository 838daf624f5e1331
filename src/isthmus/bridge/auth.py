"""Tokens: clients (viewer, user, admin) and edge enrolment, stored hashed.

A token file (JSON, mode 600) holds SHA-256 digests only: tokens are 256-bit random
strings, so a plain digest is as strong as a slow hash here and costs microseconds per
request. ``ISTHMUS_ADMIN_TOKEN`` and ``ISTHMUS_EDGE_TOKEN`` add one token each from the
environment. The file is re-read when it changes, so ``isthmus token create`` takes
effect without a restart.

Several bridges share their tokens through Redis instead: ``redis_tokens.open_token_store``
gives this ``TokenStore`` without a Redis URL and a ``RedisTokenStore`` (the same lookups,
fed from Redis) with one. Both have ``await start()``/``await stop()`` and ``healthy``/``problem``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..types import Principal, Role
from .standalone import Standalone

TOKEN_PREFIX = "ist_"
COOKIE_NAME = "isthmus_session"
EDGE_ROLE = "edge"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class EdgeGrant:
    """An enrolment token's right to register edges whose names match ``pattern``."""

    id: str
    pattern: str

    def allows(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


class TokenStore(Standalone):
    def __init__(self, path: Path | None, *, admin_token: str | None = None,
                 edge_token: str | None = None) -> None:
        self.path = path
        self._env_clients: dict[str, Principal] = {}
        self._env_edges: dict[str, EdgeGrant] = {}
        if admin_token:
            self._env_clients[digest(admin_token)] = Principal("admin", Role.admin, "env:admin")
        if edge_token:
            self._env_edges[digest(edge_token)] = EdgeGrant("env", "*")
        self._file_clients: dict[str, Principal] = {}
        self._file_edges: dict[str, EdgeGrant] = {}
        self._mtime: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._refresh(force=True)

    # -- reading ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Re-read the file now if it changed; True when it did (revocations to enforce)."""
        return self._refresh(force=False, every=0.0)

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
            self._file_clients, self._file_edges, self._mtime = {}, {}, None
            return changed
        mtime = (st.st_mtime_ns, st.st_size, st.st_ino)
        if mtime == self._mtime and not force:
            return False
        clients, edges = index_entries(read_entries(self.path))
        self._file_clients, self._file_edges, self._mtime = clients, edges, mtime
        return True

    def client(self, token: str | None) -> Principal | None:
        """The principal a client token stands for, or None."""
        if not token:
            return None
        return self.client_by_digest(digest(token))

    def client_by_digest(self, key: str) -> Principal | None:
        """The principal of the token whose digest is ``key`` (re-reading the file at most once a second)."""
        self._refresh()
        return self._env_clients.get(key) or self._file_clients.get(key)

    def edge_allowed(self, token: str | None, name: str) -> bool:
        if not token:
            return False
        self._refresh()
        return self.edge_allowed_digest(digest(token), name)

    def edge_allowed_digest(self, key: str, name: str) -> bool:
        grant = self._env_edges.get(key) or self._file_edges.get(key)
        return grant is not None and grant.allows(name)

    @property
    def has_edge_tokens(self) -> bool:
        self._refresh()
        return bool(self._env_edges or self._file_edges)

    @property
    def has_client_tokens(self) -> bool:
        self._refresh()
        return bool(self._env_clients or self._file_clients)


def index_entries(entries: list[dict[str, Any]]) -> tuple[dict[str, Principal], dict[str, EdgeGrant]]:
    """(client principals, edge grants) by token digest, for the entries not revoked."""
    clients: dict[str, Principal] = {}
    edges: dict[str, EdgeGrant] = {}
    for entry in entries:
        if entry.get("revoked"):
            continue
        if entry["role"] == EDGE_ROLE:
            edges[entry["hash"]] = EdgeGrant(entry["id"], entry.get("edge") or "*")
        else:
            clients[entry["hash"]] = Principal(entry.get("name") or entry["id"], Role.parse(entry["role"]),
                                               entry.get("principal") or entry["id"])
    return clients, edges


# -- the token file ---------------------------------------------------------------------------

def read_entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return list(data.get("tokens", []))


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the file atomically through a temporary file that is created fresh.

    ``O_EXCL | O_NOFOLLOW`` with a random name: a planted ``tokens.tmp`` (a symlink, or a
    file with a wide mode) is never written through or reused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"tokens": entries}, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_token(path: Path, role: str, name: str | None = None, edge: str | None = None,
                 principal: str | None = None) -> tuple[str, dict[str, Any]]:
    """Add a token to the file; returns (the token, shown once; its entry).

    Without ``principal`` the token is its own principal (its id), so it owns what it
    creates alone; give several tokens one ``principal`` to let them share (rotation).
    """
    token, entry = new_entry(role, name=name, edge=edge, principal=principal)
    entries = read_entries(path)
    entries.append(entry)
    _write_entries(path, entries)
    return token, entry


def new_entry(role: str, name: str | None = None, edge: str | None = None,
              principal: str | None = None) -> tuple[str, dict[str, Any]]:
    """A fresh token and its entry (stored nowhere yet); see ``create_token``."""
    if role != EDGE_ROLE:
        Role.parse(role)
    token = new_token()
    token_id = "tok_" + secrets.token_hex(6)
    entry = {
        "id": token_id,
        "name": name or (f"edge:{edge or '*'}" if role == EDGE_ROLE else f"{role}-{token_id[4:]}"),
        "role": role,
        "hash": digest(token),
        "created": int(time.time()),
    }
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
