"""Pools, pilots and pool tasks in SQLite: what an edge restart must not lose.

Tasks are written in batches (one transaction per submission, per dispatch, per set of
results), so a pool moving thousands of tasks a second costs a few writes per tick, not one
per task. Final tasks stay on disk only; the plugin keeps unfinished ones in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..sqlite_store import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pilots (
    job_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    native_id TEXT,
    edge TEXT,
    state TEXT NOT NULL,
    sid TEXT,
    reason TEXT,
    created REAL NOT NULL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS pilots_pool ON pilots(pool, state);
CREATE TABLE IF NOT EXISTS tasks (
    n INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    owner TEXT NOT NULL,
    sid TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    pilot TEXT,
    remote TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    result TEXT,
    reason TEXT,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS tasks_pool_state ON tasks(pool, state, n);
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks(owner, n);
"""
UNFINISHED = ("PENDING", "RUNNING")
TASK_COLUMNS = ("n", "pool", "owner", "sid", "spec", "state", "pilot", "remote", "attempts", "exit_code", "result",
                "reason", "submitted", "started", "finished")
PILOT_COLUMNS = ("job_id", "pool", "native_id", "edge", "state", "sid", "reason", "created", "ended")


def uid_of(n: int) -> str:
    return f"pt.{n:09d}"


def number_of(uid: str) -> int | None:
    if not uid.startswith("pt.") or not uid[3:].isdigit() or len(uid) > 24:
        return None
    return int(uid[3:])


class PilotStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    # -- pools ------------------------------------------------------------------------------------

    def put_pool(self, name: str, owner: list[Any], spec: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO pools VALUES (?, ?, ?, 'ACTIVE', ?)",
                             (name, json.dumps(owner), json.dumps(spec), time.time()))

    def set_pool_state(self, name: str, state: str) -> None:
        with self._lock:
            self._db.execute("UPDATE pools SET state = ? WHERE name = ?", (state, name))

    def pools(self, state: str | None = "ACTIVE") -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT name, owner, spec, state, created FROM pools"
                                    + (" WHERE state = ?" if state else "") + " ORDER BY name",
                                    (state,) if state else ()).fetchall()
        return [{"name": r[0], "owner": json.loads(r[1]), "spec": json.loads(r[2]), "state": r[3], "created": r[4]}
                for r in rows]

    # -- pilots -----------------------------------------------------------------------------------

    def put_pilot(self, job_id: str, pool: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO pilots (job_id, pool, state, created) VALUES (?, ?, 'SUBMITTED', ?)",
                             (job_id, pool, time.time()))

    def update_pilot(self, job_id: str, **fields: Any) -> None:
        if not fields or not set(fields) <= set(PILOT_COLUMNS[2:]):
            raise ValueError(f"pilot fields are {PILOT_COLUMNS[2:]}")
        with self._lock:
            self._db.execute(f"UPDATE pilots SET {', '.join(f'{k} = ?' for k in fields)} WHERE job_id = ?",
                             (*fields.values(), job_id))

    def pilots(self, pool: str | None = None, live: bool = True) -> list[dict[str, Any]]:
        where, args = [], []
        if pool is not None:
            where.append("pool = ?")
            args.append(pool)
        if live:
            where.append("state != 'ENDED'")
        sql = f"SELECT {', '.join(PILOT_COLUMNS)} FROM pilots"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created", args).fetchall()
        return [dict(zip(PILOT_COLUMNS, r, strict=True)) for r in rows]

    def pilot(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(PILOT_COLUMNS)} FROM pilots WHERE job_id = ?",
                                   (job_id,)).fetchone()
        return None if row is None else dict(zip(PILOT_COLUMNS, row, strict=True))

    # -- tasks ------------------------------------------------------------------------------------

    def add_tasks(self, pool: str, owner: str, sid: str, specs: list[dict[str, Any]]) -> list[int]:
        """Store new PENDING tasks in one transaction; their numbers, in order."""
        now = time.time()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            first = (cur.execute("SELECT COALESCE(MAX(n), 0) FROM tasks").fetchone()[0]) + 1
            numbers = list(range(first, first + len(specs)))
            cur.executemany("INSERT INTO tasks (n, pool, owner, sid, spec, state, submitted) "
                            "VALUES (?, ?, ?, ?, ?, 'PENDING', ?)",
                            [(n, pool, owner, sid, json.dumps(s), now) for n, s in zip(numbers, specs, strict=True)])
            cur.execute("COMMIT")
        return numbers

    def update_tasks(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Apply (n, fields) changes in one transaction."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            for n, fields in rows:
                cur.execute(f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in fields)} WHERE n = ?",
                            (*fields.values(), n))
            cur.execute("COMMIT")

    def task(self, n: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks WHERE n = ?", (n,)).fetchone()
        return None if row is None else dict(zip(TASK_COLUMNS, row, strict=True))

    def states(self, numbers: list[int]) -> dict[int, tuple[str, int | None, str]]:
        """n → (state, exit_code, owner) for those that exist."""
        found: dict[int, tuple[str, int | None, str]] = {}
        with self._lock:
            for start in range(0, len(numbers), 500):
                part = numbers[start:start + 500]
                sql = f"SELECT n, state, exit_code, owner FROM tasks WHERE n IN ({', '.join('?' * len(part))})"
                for n, state, code, owner in self._db.execute(sql, part):
                    found[n] = (state, code, owner)
        return found

    def page(self, owner: str | None, pool: str | None, state: str | None, after: int,
             limit: int) -> list[tuple[int, str, int | None]]:
        where: list[str] = ["n > ?"]
        args: list[Any] = [after]
        for column, value in (("owner", owner), ("pool", pool), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        with self._lock:
            return list(self._db.execute(f"SELECT n, state, exit_code FROM tasks WHERE {' AND '.join(where)} "
                                         "ORDER BY n LIMIT ?", (*args, limit)))

    def counts(self, pool: str, owner: str | None = None) -> dict[str, int]:
        sql, args = "SELECT state, COUNT(*) FROM tasks WHERE pool = ?", [pool]
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        with self._lock:
            return dict(self._db.execute(sql + " GROUP BY state", args).fetchall())

    def specs(self, numbers: list[int]) -> dict[int, dict[str, Any]]:
        """n → spec, read when tasks are handed to a pilot (specs are not kept in memory)."""
        found: dict[int, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(numbers), 500):
                part = numbers[start:start + 500]
                sql = f"SELECT n, spec FROM tasks WHERE n IN ({', '.join('?' * len(part))})"
                found.update((n, json.loads(spec)) for n, spec in self._db.execute(sql, part))
        return found

    def unfinished(self) -> Iterator[tuple[Any, ...]]:
        """(n, pool, owner, sid, state, pilot, remote, attempts) of every PENDING or RUNNING task, in
        submission order (read at startup)."""
        with self._lock:
            rows = self._db.execute("SELECT n, pool, owner, sid, state, pilot, remote, attempts FROM tasks "
                                    "WHERE state IN (?, ?) ORDER BY n", UNFINISHED).fetchall()
        yield from rows
