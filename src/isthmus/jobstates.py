"""The one job-state vocabulary of Isthmus, for every job whoever runs it.

    NEW → PENDING ⇄ HELD → RUNNING → DONE | FAILED | CANCELLED        (UNKNOWN: nobody can say)

The scheduler layer (``isthmus.schedulers``: Slurm, PBS, the simulator; so ``queue_info``
and the ``cluster`` view) and the ``psij`` plugin (and its client) all speak it, on the
wire too. Why these names and not PSI/J's (``QUEUED ACTIVE COMPLETED CANCELED``):

* they were already the wire values of ``queue_info``, the ``cluster`` view and the
  ``tasks`` plugin (its ``TaskState`` has the same five names), so only ``psij`` moves;
* they are the words HPC users read in ``squeue``/``sacct`` every day (PENDING, RUNNING,
  CANCELLED) — PSI/J's are one library's;
* they say more: HELD and UNKNOWN have no PSI/J name, and DONE/FAILED split a finished job
  by its exit code the way PSI/J's COMPLETED/FAILED do.

``NEW`` is the one state no scheduler reports: a job Isthmus has recorded but not yet handed
to one (psij answers ``submit_job`` with it). PSI/J's names are read in exactly one place,
``from_psij``; ``parse`` also accepts them, for records and edges from before the change.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    NEW = "NEW"              # recorded by Isthmus, not yet accepted by a scheduler
    PENDING = "PENDING"      # queued: waiting for resources, priority, a dependency
    HELD = "HELD"            # queued but held (user/admin hold, suspended): will not start by itself
    RUNNING = "RUNNING"      # started (also completing, staging out)
    DONE = "DONE"            # finished with exit code 0
    FAILED = "FAILED"        # finished otherwise: non-zero exit, timeout, node failure, submission failure
    CANCELLED = "CANCELLED"  # cancelled (scancel, qdel, psij cancel) or preempted
    UNKNOWN = "UNKNOWN"      # the scheduler's state has no meaning here

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL: frozenset[JobState] = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

#: PSI/J's state names (``psij.JobState``) → ours; only the ones that differ are renamed.
PSIJ_NAMES: dict[str, JobState] = {
    "NEW": JobState.NEW,
    "QUEUED": JobState.PENDING,
    "ACTIVE": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "FAILED": JobState.FAILED,
    "CANCELED": JobState.CANCELLED,
}


def from_psij(name: str, exit_code: int | None = None) -> JobState:
    """A PSI/J state name as ours: the one place PSI/J's vocabulary is read.

    PSI/J's COMPLETED means "exit code 0", but a re-attached local job reports COMPLETED
    whatever it returned: with a known non-zero ``exit_code`` it is FAILED.
    """
    state = PSIJ_NAMES.get(name, JobState.UNKNOWN)
    if state is JobState.DONE and exit_code not in (None, 0):
        return JobState.FAILED
    return state


def parse(name: str) -> JobState:
    """A state name read back (a stored record, an answer): ours, else PSI/J's, else UNKNOWN."""
    try:
        return JobState(name)
    except ValueError:
        return from_psij(name)


__all__ = ["FINAL", "PSIJ_NAMES", "JobState", "from_psij", "parse"]
