"""Pick the scheduler from what is installed (or from a forced name)."""

from __future__ import annotations

import logging

from .base import BatchSystem, which

log = logging.getLogger("isthmus.schedulers")

KNOWN = ("slurm", "pbs", "none", "simulated")


def detect(forced: str | None = None) -> BatchSystem:
    """Slurm if ``sinfo`` is on PATH, else PBS Pro if ``qstat`` and ``pbsnodes`` are, else none."""
    name = forced or ("slurm" if which("sinfo") else "pbs" if which("qstat") and which("pbsnodes") else "none")
    if name == "slurm":
        from .slurm import Slurm

        return Slurm()
    if name == "pbs":
        from .pbs import PBSPro

        return PBSPro()
    if name == "none":
        from .none import NoScheduler

        return NoScheduler()
    if name == "simulated":
        raise LookupError("scheduler 'simulated' is provided by the simulator plugin: enable it "
                          "(plugins: {simulator: {enabled: true}})")
    raise LookupError(f"unknown scheduler {name!r}; expected one of {', '.join(KNOWN)}")
