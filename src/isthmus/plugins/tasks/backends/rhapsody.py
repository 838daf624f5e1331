"""RADICAL Rhapsody (``rhapsody-py``) as a task backend, when it is installed.

Each chunk travels as ONE Rhapsody ComputeTask running the same worker function as the
local pool, so Rhapsody's backends (``concurrent`` by default; ``dask``, ``dragon`` ... per
its own configuration) execute Isthmus chunks without a per-task round trip.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any, cast

from ..worker import run_chunk
from . import Backend
from .local import worker_pool


def available() -> bool:
    try:
        import rhapsody  # noqa: F401
    except ImportError:
        return False
    return True


class RhapsodyBackend(Backend):
    name = "rhapsody"

    def __init__(self, kind: str = "concurrent", workers: int | None = None) -> None:
        if not available():
            raise ValueError("the rhapsody backend needs rhapsody-py (pip install rhapsody-py), which is not "
                             "installed on this edge")
        self.kind = kind
        self.workers = workers or os.cpu_count() or 1
        self.session: Any = None

    async def start(self) -> None:
        import rhapsody
        from rhapsody.backends import ConcurrentExecutionBackend

        if self.kind == "concurrent":
            pool = await asyncio.to_thread(worker_pool, self.workers)  # workers die with the edge, hold no secrets
            backend = await ConcurrentExecutionBackend(pool)
        else:
            backend = rhapsody.get_backend(self.kind)
            if inspect.isawaitable(backend):
                backend = await backend
        self.session = rhapsody.Session(backends=[backend])

    async def run_chunk(self, tasks: list[dict[str, Any]], tail: int) -> list[dict[str, Any]]:
        from rhapsody import ComputeTask

        task = ComputeTask(function=run_chunk, args=[tasks, tail])
        (future,) = await self.session.submit_tasks([task])
        await future
        return cast(list[dict[str, Any]], task.return_value)  # rhapsody ships no types

    def parallelism(self) -> int:
        return self.workers * 2

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
