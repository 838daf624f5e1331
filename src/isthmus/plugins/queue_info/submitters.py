"""Who submitted a scheduler job through Isthmus, read from the psij plugin's job records.

queue_info sees every job of the edge's Unix user, but all principals share that user, so
the scheduler cannot say which principal a job is for. The psij plugin records the
submitting principal's id with the job's native (scheduler) id; queue_info reads those
records, read-only, to decide who may cancel a job. It never writes psij's database.

Only executors that talk to this scheduler count: psij's ``local`` executor records process
ids, which must never authorise cancelling a scheduler job that happens to have that number.
When an id was recorded twice (a scheduler that reuses ids), the newest record decides.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("isthmus.plugins.queue_info")

# psij executor names that submit to each scheduler (by BatchSystem.psij_executor)
EXECUTORS: dict[str, tuple[str, ...]] = {"pbs": ("pbs", "pbspro"), "pbspro": ("pbs", "pbspro")}
NOT_A_SCHEDULER = frozenset({"local", "none", "simulated"})
PSIJ_DB = "jobs.sqlite"


def executors_for(psij_executor: str) -> tuple[str, ...]:
    """The psij executors whose native ids are this scheduler's job ids (none for local runs)."""
    if psij_executor in NOT_A_SCHEDULER:
        return ()
    return EXECUTORS.get(psij_executor, (psij_executor,))


def submitter(database: Path, native_id: str, executors: tuple[str, ...]) -> str | None:
    """The principal id psij recorded for scheduler job ``native_id``, or None when there is no record."""
    if not executors or not database.is_file():
        return None
    marks = ", ".join("?" * len(executors))
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            row = db.execute(f"SELECT owner FROM jobs WHERE native_id = ? AND executor IN ({marks}) "
                             "ORDER BY created DESC LIMIT 1", (native_id, *executors)).fetchone()
    except sqlite3.Error as exc:
        log.warning("cannot read psij's job records in %s: %s", database, exc)
        return None
    return str(row[0]) if row else None
