"""Batch schedulers behind one interface (``BatchSystem``), chosen once per process.

``current()`` returns the scheduler in force: the one a plugin installed with ``use()``
(the simulator does this), else the one ``detect()`` finds (or the config forces).
"""

from __future__ import annotations

from .base import Allocation, BatchSystem, Job, JobState, Node, NodeState, Partition

_override: BatchSystem | None = None
_detected: BatchSystem | None = None
_forced: str | None = None


def use(system: BatchSystem | None) -> None:
    """Install ``system`` as this process's scheduler (None removes the override)."""
    global _override
    _override = system


def force(name: str | None) -> None:
    """Force a scheduler by name (config key ``scheduler``); ``auto``/None detects."""
    global _forced, _detected
    _forced = None if name in (None, "", "auto") else name
    _detected = None


def current() -> BatchSystem:
    global _detected
    if _override is not None:
        return _override
    if _detected is None:
        from .detect import detect

        _detected = detect(_forced)
    return _detected


__all__ = ["Allocation", "BatchSystem", "Job", "JobState", "Node", "NodeState", "Partition",
           "current", "force", "use"]
