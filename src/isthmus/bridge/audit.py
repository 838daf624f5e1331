"""The audit log: one JSON line per state-changing call or refused access, never a secret.

Each line holds who (principal id, name, role), from where (source address), what (edge,
plugin, method, path without its query, the action), the outcome (status, bytes in and out,
duration) and the request id the client saw in ``X-Request-ID``. Tokens, cookies, query
strings and bodies are never written. The file is appended with ``O_APPEND`` (one
``write`` per line, so the bridge and ``isthmus token`` commands can share it) and rotated
by size: ``audit.log`` → ``audit.log.1`` … ``audit.log.N``.

``isthmus audit`` reads the files back, oldest first, with filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..config import AppConfig

log = logging.getLogger("isthmus.audit")

OFF = "-"  # bridge.audit_log: "-" turns the log off


def audit_path(app_config: AppConfig) -> Path | None:
    """Where this configuration's bridge writes its audit log (None: off)."""
    configured = app_config.bridge.audit_log
    if configured is not None and str(configured) == OFF:
        return None
    if configured is not None:
        return Path(configured).expanduser()
    return app_config.resolved_state_dir() / "audit.log"


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def iso_time(epoch: float) -> str:
    """UTC with milliseconds; the date part is formatted once per second."""
    whole = int(epoch)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((epoch - whole) * 1000):03d}Z"


class AuditLog:
    """Appends entries to ``path`` (mode 600), rotating past ``max_bytes``, keeping ``backups``.

    In the bridge (``batched=True``) the lines of one turn of the event loop go out in one
    ``write`` at its end: under load that is one system call for many requests, and a crash
    loses at most the lines of the turn it happened in.
    """

    def __init__(self, path: Path, max_bytes: int = 64 * 1024 * 1024, backups: int = 10, *,
                 batched: bool = False) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.batched = batched
        self._fd = -1
        self._size = 0
        self._pending: list[bytes] = []

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry (a ``time`` field is added first). I/O errors propagate to the caller
        (batched: they are logged when the turn's lines are written)."""
        line = orjson.dumps({"time": iso_time(time.time()), **entry}) + b"\n"
        if not self.batched:
            self._append(line)
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        """Write the lines waiting for the end of this turn of the event loop."""
        lines, self._pending = self._pending, []
        if not lines:
            return
        try:
            self._append(b"".join(lines))
        except OSError as exc:
            log.error("cannot write %d line(s) to the audit log %s: %s", len(lines), self.path, exc)

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        elif self._size + len(data) > self.max_bytes:
            self._rotate(len(data))
        os.write(self._fd, data)
        self._size += len(data)

    def _rotate(self, adding: int) -> None:
        """Shift ``.1 … .N-1`` up by one and start a fresh file, unless another writer already did."""
        os.close(self._fd)
        self._fd = -1
        try:
            current = os.stat(self.path, follow_symlinks=False).st_size
        except FileNotFoundError:
            current = 0
        if current + adding > self.max_bytes:
            if self.backups == 0:
                self.path.unlink(missing_ok=True)
            else:
                for n in range(self.backups - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{n}")
                    if older.exists():
                        os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def record_cli(app_config: AppConfig, action: str, **fields: Any) -> None:
    """An entry for a change made on the bridge's host with the CLI (``isthmus token create``…);
    the principal is the local account. A missing or unwritable log is not fatal to the command."""
    path = audit_path(app_config)
    if path is None:
        return
    log = AuditLog(path, app_config.bridge.audit_max_bytes, app_config.bridge.audit_backups)
    try:
        log.write({"action": action, "principal": f"local:{getpass.getuser()}", "role": "local",
                   "source": socket.gethostname(), "request_id": None, **fields})
    except OSError:
        pass
    finally:
        log.close()


# -- reading ---------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: float | None = None) -> float:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO 8601 time → epoch seconds; ValueError otherwise."""
    now = time.time() if now is None else now
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since takes a duration like 30m, 2h, 7d or a time like 2026-11-23T10:00:00Z; "
                         f"got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _files(path: Path) -> list[Path]:
    """The log and its rotated files, oldest first."""
    rotated = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def _epoch(stamp: Any) -> float:
    try:
        return parse_since(str(stamp))
    except ValueError:
        return 0.0


def read_entries(path: Path, *, since: float | None = None, principal: str | None = None,
                 edge: str | None = None) -> Iterator[dict[str, Any]]:
    """Entries oldest first; ``principal`` matches the id or the name; bad lines are skipped."""
    for file in _files(path):
        with contextlib.suppress(FileNotFoundError), open(file, "rb") as fh:
            for line in fh:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(entry, dict):
                    continue
                if principal is not None and principal not in (entry.get("principal"), entry.get("name")):
                    continue
                if edge is not None and entry.get("edge") != edge:
                    continue
                if since is not None and _epoch(entry.get("time")) < since:
                    continue
                yield entry
