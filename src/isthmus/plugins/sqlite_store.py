"""The one way plugins keep records on disk: a SQLite file in WAL mode, shared by threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class SqliteStore:
    """A SQLite database with a lock; subclasses add the queries. Survives edge restarts."""

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()
