"""Who put what where: ownership records of staged files, directories and partial uploads.

Every transfer runs as the edge's one Unix user, so the file system cannot tell Isthmus
principals apart; these records do. One SQLite table keyed by the resolved absolute path
holds the owning principal's id and the kind of entry (``file``, ``dir`` or ``partial``).
A path without a record was not put there through Isthmus. A record whose path no longer
exists is stale: it grants nothing (there is nothing to read) and the next writer replaces it.

One connection guarded by a lock; callers run it off the event loop. WAL mode keeps a
reader (a second process, a backup) apart from the writer.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..sqlite_store import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (
    path TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS owners_parent ON owners(parent);
CREATE INDEX IF NOT EXISTS owners_owner ON owners(owner, path);
"""
KINDS = frozenset({"file", "dir", "partial"})


def _range(directory: Path) -> tuple[str, str]:
    """[low, high) of the keys strictly below ``directory``: '0' sorts right after '/'."""
    prefix = str(directory).rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


class OwnerStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def owner(self, path: Path) -> str | None:
        """The id of the principal that put ``path`` there, or None when Isthmus did not."""
        rec = self.record(path)
        return rec[0] if rec else None

    def record(self, path: Path) -> tuple[str, str] | None:
        """(owner, kind) of ``path``, or None."""
        with self._lock:
            row = self._db.execute("SELECT owner, kind FROM owners WHERE path = ?", (str(path),)).fetchone()
        return (row[0], row[1]) if row else None

    def children(self, directory: Path) -> dict[str, str]:
        """Owner of each recorded direct child of ``directory``, by name."""
        with self._lock:
            rows = self._db.execute("SELECT path, owner FROM owners WHERE parent = ?", (str(directory),)).fetchall()
        return {Path(p).name: o for p, o in rows}

    def owns_below(self, directory: Path, owner: str) -> bool:
        """Does ``owner`` have anything recorded below ``directory`` (at any depth)?"""
        low, high = _range(directory)
        with self._lock:
            row = self._db.execute("SELECT 1 FROM owners WHERE owner = ? AND path >= ? AND path < ? LIMIT 1",
                                   (owner, low, high)).fetchone()
        return row is not None

    def names_leading_to(self, directory: Path, owner: str) -> set[str]:
        """Names in ``directory`` that are, or lead to, something of ``owner``'s."""
        low, high = _range(directory)
        with self._lock:
            rows = self._db.execute("SELECT path FROM owners WHERE owner = ? AND path >= ? AND path < ?",
                                    (owner, low, high)).fetchall()
        return {p[len(low):].split("/", 1)[0] for (p,) in rows}

    def claim(self, path: Path, owner: str, kind: str) -> None:
        """Record (or replace the record) that ``owner`` put ``path`` there; durable on return."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        with self._lock:
            self._db.execute("INSERT INTO owners (path, parent, owner, kind, created) VALUES (?, ?, ?, ?, ?) "
                             "ON CONFLICT(path) DO UPDATE SET owner = excluded.owner, kind = excluded.kind, "
                             "created = excluded.created",
                             (str(path), str(path.parent), owner, kind, time.time()))

    def restore(self, path: Path, previous: tuple[str, str] | None) -> None:
        """Put back what :meth:`record` answered before a change that failed."""
        if previous is None:
            self.forget(path)
        else:
            self.claim(path, *previous)

    def forget(self, path: Path, below: bool = False) -> None:
        """Drop the record of ``path`` and, with ``below``, every record under it."""
        with self._lock:
            if below:
                low, high = _range(path)
                self._db.execute("DELETE FROM owners WHERE path = ? OR (path >= ? AND path < ?)",
                                 (str(path), low, high))
            else:
                self._db.execute("DELETE FROM owners WHERE path = ?", (str(path),))
