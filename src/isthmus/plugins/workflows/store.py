"""Workflows and their steps in SQLite on the bridge: what a restart resumes from.

A step's ``handle`` is what it made on an edge (a job id, a task session and its uids), stored
right after the edge answered, so a resumed step follows that work instead of submitting again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from ..sqlite_store import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, principal BLOB NOT NULL,
    document BLOB NOT NULL, params BLOB NOT NULL, state TEXT NOT NULL, error TEXT,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_owner ON workflows (owner, created);
CREATE INDEX IF NOT EXISTS workflows_state ON workflows (state);
CREATE TABLE IF NOT EXISTS steps (
    workflow TEXT NOT NULL, step TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
    handle BLOB, outputs BLOB, error TEXT, started REAL, finished REAL,
    PRIMARY KEY (workflow, step));
"""

FINAL = frozenset({"DONE", "FAILED", "CANCELLED", "SKIPPED"})
WORKFLOW_FINAL = frozenset({"DONE", "FAILED", "CANCELLED"})


def _loads(raw: bytes | None) -> Any:
    return orjson.loads(raw) if raw else None


class WorkflowStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def create(self, wid: str, name: str, owner: str, principal: list[Any], document: dict[str, Any],
               params: dict[str, Any], steps: list[str]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO workflows VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (wid, name, owner, orjson.dumps(principal), orjson.dumps(document),
                              orjson.dumps(params), "RUNNING", None, now, now))
            self._db.executemany("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?)",
                                 [(wid, s, "PENDING", 0, None, None, None, None, None) for s in steps])
            self._db.execute("COMMIT")

    def set_workflow(self, wid: str, state: str, error: str | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE workflows SET state=?, error=?, updated=? WHERE id=?",
                             (state, error, time.time(), wid))

    def set_step(self, wid: str, step: str, **fields: Any) -> None:
        """Update some of: state, attempt, handle, outputs, error, started, finished."""
        cols, values = [], []
        for key, value in fields.items():
            if key not in ("state", "attempt", "handle", "outputs", "error", "started", "finished"):
                raise KeyError(key)
            cols.append(f"{key}=?")
            values.append(orjson.dumps(value) if key in ("handle", "outputs") and value is not None else value)
        with self._lock:
            self._db.execute(f"UPDATE steps SET {', '.join(cols)} WHERE workflow=? AND step=?",
                             (*values, wid, step))

    def get(self, wid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT id, name, owner, principal, document, params, state, error, created, "
                                   "updated FROM workflows WHERE id=?", (wid,)).fetchone()
            if row is None:
                return None
            steps = self._db.execute("SELECT step, state, attempt, handle, outputs, error, started, finished "
                                     "FROM steps WHERE workflow=?", (wid,)).fetchall()
        return {"id": row[0], "name": row[1], "owner": row[2], "principal": _loads(row[3]),
                "document": _loads(row[4]), "params": _loads(row[5]), "state": row[6], "error": row[7],
                "created": row[8], "updated": row[9],
                "steps": {s[0]: {"state": s[1], "attempt": s[2], "handle": _loads(s[3]), "outputs": _loads(s[4]),
                                 "error": s[5], "started": s[6], "finished": s[7]} for s in steps}}

    def running(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM workflows WHERE state='RUNNING'")]

    def page(self, owner: str | None, limit: int, before: float | None) -> list[dict[str, Any]]:
        """Newest first; ``owner`` None: everyone's (admins)."""
        query = "SELECT id, name, owner, state, error, created, updated FROM workflows"
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if before is not None:
            where.append("created<?")
            args.append(before)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [{"id": r[0], "name": r[1], "owner": r[2], "state": r[3], "error": r[4], "created": r[5],
                 "updated": r[6]} for r in rows]
