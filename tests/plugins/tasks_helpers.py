"""Functions the task tests run on the edge (importable by name from worker processes)."""

from __future__ import annotations

import time


def square(x: int) -> int:
    return x * x


def boom(message: str) -> None:
    raise RuntimeError(message)


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def environment_view() -> dict[str, object]:
    """What task code can learn about its environment: os.environ, and its own and its parent's /proc environ."""
    import os

    def proc_environ(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                return fh.read().decode("utf-8", errors="replace").replace("\0", "\n")
        except OSError as exc:
            return f"<unreadable: {exc}>"

    return {"environ": dict(os.environ), "proc_self": proc_environ(os.getpid()),
            "proc_parent": proc_environ(os.getppid())}


def dask_view() -> dict[str, object]:
    """Where a function task runs: its Dask worker (get_worker raises outside one), the batch job, which isthmus."""
    import os

    from distributed import get_worker

    import isthmus

    return {"worker": get_worker().address, "job": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid(),
            "isthmus": isthmus.__file__}


def blob(size: int) -> str:
    """A return value of ``size`` characters: records larger than output_tail bounds (get_tasks' answer size)."""
    return "x" * size
