"""Task states and the transitions allowed between them: no I/O, tested on its own.

    PENDING → RUNNING → DONE | FAILED
    PENDING → CANCELLED            (never started)
    RUNNING → CANCELLED            (cancel asked while it ran; its result is discarded)
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})
ALLOWED = {
    TaskState.PENDING: {TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED},
    TaskState.RUNNING: {TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED},
}


def advance(current: TaskState, event: TaskState, cancel_requested: bool = False) -> TaskState | None:
    """The next state for ``event``, or None when the event must be ignored.

    A result that arrives for a task whose cancel was requested while it ran turns into
    CANCELLED; anything after a final state is ignored.
    """
    if current.final:
        return None
    if cancel_requested and event in (TaskState.DONE, TaskState.FAILED):
        event = TaskState.CANCELLED
    return event if event in ALLOWED.get(current, set()) else None
