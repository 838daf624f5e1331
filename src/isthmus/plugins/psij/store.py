"""Job records in SQLite: spec, native id, state history, output paths, owner.

One connection guarded by a lock; callers run it off the event loop (``asyncio.to_thread``)
and PSI/J's callback threads use it directly. WAL mode keeps readers and the writer apart.

States are the project's (``isthmus.jobstates``); records written with PSI/J's names (QUEUED,
ACTIVE, COMPLETED, CANCELED: before the one vocabulary) are rewritten when the store opens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ...jobstates import FINAL as FINAL_STATES
from ...jobstates import PSIJ_NAMES, parse
from ..sqlite_store import SqliteStore

FINAL = frozenset(state.value for state in FINAL_STATES)  # plain strings: SQL parameters, record values
LEGACY = tuple(name for name, state in PSIJ_NAMES.items() if name != state.value)
# Job records; an alias because JobStore.list shadows the builtin in the class body's annotations.
JobRecords = list[dict[str, Any]]
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    executor TEXT NOT NULL,
    native_id TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    message TEXT,
    stdout_path TEXT NOT NULL,
    stderr_path TEXT NOT NULL,
    exit_file TEXT NOT NULL,
    workdir TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    history TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs(state, created);
CREATE INDEX IF NOT EXISTS jobs_owner_state ON jobs(owner, state, created);
"""
COLUMNS = ("id", "owner", "executor", "native_id", "spec", "state", "exit_code", "message", "stdout_path",
           "stderr_path", "exit_file", "workdir", "created", "updated", "history")


class JobStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)
        self._migrate_states()

    def _migrate_states(self) -> None:
        """Rewrite states (and their history) stored under PSI/J's names into ours; a no-op once done."""
        marks = ", ".join("?" * len(LEGACY))
        like = " OR ".join("history LIKE ?" for _ in LEGACY)
        with self._lock:
            rows = self._db.execute(f"SELECT id, state, history FROM jobs WHERE state IN ({marks}) OR {like}",
                                    (*LEGACY, *(f'%"{name}"%' for name in LEGACY))).fetchall()
            if not rows:
                return
            updates = [(parse(state).value,
                        json.dumps([{**step, "state": parse(step["state"]).value} for step in json.loads(history)]),
                        job_id) for job_id, state, history in rows]
            self._db.execute("BEGIN")
            try:
                self._db.executemany("UPDATE jobs SET state = ?, history = ? WHERE id = ?", updates)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        rec = dict(zip(COLUMNS, row, strict=True))
        rec["spec"] = json.loads(rec["spec"])
        rec["history"] = json.loads(rec["history"])
        return rec

    def create(self, rec: dict[str, Any]) -> None:
        now = time.time()
        values = {**rec, "spec": json.dumps(rec["spec"]), "created": now, "updated": now,
                  "history": json.dumps([{"state": rec["state"], "time": now}])}
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                             [values.get(c) for c in COLUMNS])

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,))
            return self._row(cur.fetchone())

    def list(self, owner: str | None = None, limit: int = 1000, before: str | None = None,
             states: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Newest first, at most ``limit``; ``before`` (a job id) continues after that job (KeyError if unknown);
        ``states``: only jobs in one of these states.

        An index serves an owner's listing (``jobs_owner``), everyone's (``jobs_created``) and
        both by state (``jobs_owner_state``, ``jobs_state_created``): a page reads its own rows,
        not the table.
        """
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += list(states)
        with self._lock:
            if before is not None:
                cursor = self._db.execute("SELECT created, id, owner FROM jobs WHERE id = ?", (before,)).fetchone()
                if cursor is None or (owner is not None and cursor[2] != owner):
                    raise KeyError(before)
                where.append("created <= ? AND (created < ? OR id < ?)")
                args += [cursor[0], cursor[0], cursor[1]]
            sql = f"SELECT {', '.join(COLUMNS)} FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = self._db.execute(sql + " ORDER BY created DESC, id DESC LIMIT ?", (*args, limit)).fetchall()
        return [r for r in (self._row(row) for row in rows) if r is not None]

    def count_by_state(self) -> dict[str, int]:
        """Jobs per state (``/_edge/metrics``): read from the ``jobs_state`` index, not the rows."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def unfinished(self) -> JobRecords:
        marks = ", ".join("?" * len(FINAL))
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE state NOT IN ({marks})",
                                    tuple(FINAL)).fetchall()
        return [r for r in (self._row(row) for row in rows) if r is not None]

    def set_native_id(self, job_id: str, native_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET native_id = ?, updated = ? WHERE id = ?",
                             (native_id, time.time(), job_id))

    def transition(self, job_id: str, state: str, exit_code: int | None = None,
                   message: str | None = None) -> dict[str, Any] | None:
        """Record a state change; returns the record, or None if it was no change or the job is final."""
        now = time.time()
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            rec = self._row(row)
            if rec is None or rec["state"] in FINAL or (rec["state"] == state and exit_code is None):
                return None
            history = [*rec["history"], {"state": state, "time": now}]
            self._db.execute("UPDATE jobs SET state = ?, exit_code = COALESCE(?, exit_code), "
                             "message = COALESCE(?, message), updated = ?, history = ? WHERE id = ?",
                             (state, exit_code, message, now, json.dumps(history), job_id))
            rec.update(state=state, updated=now, history=history)
            if exit_code is not None:
                rec["exit_code"] = exit_code
            if message is not None:
                rec["message"] = message
            return rec

    def prune(self, max_age: float, max_jobs: int) -> JobRecords:
        """Forget final jobs older than ``max_age`` seconds, and the oldest beyond ``max_jobs``."""
        cutoff = time.time() - max_age
        marks = ", ".join("?" * len(FINAL))
        with self._lock:
            old = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE state IN ({marks}) AND updated < ?",
                                   (*FINAL, cutoff)).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] - len(old)
            extra: list[tuple[Any, ...]] = []
            if total > max_jobs:
                extra = self._db.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE state IN ({marks}) AND updated >= ? "
                    "ORDER BY updated ASC LIMIT ?", (*FINAL, cutoff, total - max_jobs)).fetchall()
            gone = [r for r in (self._row(row) for row in old + extra) if r is not None]
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(r["id"],) for r in gone])
        return gone
