"""A process pool on the edge, sized to the cores.

Workers come from a ``forkserver`` (not a fork of the multi-threaded edge) and spawn
executables themselves, so spawning never happens on the edge's uvloop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psutil

from ..worker import run_chunk
from . import Backend


class LocalBackend(Backend):
    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            # start the workers now, not on the first batch
            await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(self._pool, run_chunk, [], 0)
                                   for _ in range(self.workers)))

    async def run_chunk(self, tasks: list[dict[str, Any]], tail: int) -> list[dict[str, Any]]:
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, run_chunk, tasks, tail)

    def parallelism(self) -> int:
        return self.workers * 2

    async def kill(self, uids: set[str]) -> int:
        return await asyncio.to_thread(self._kill, uids)

    def _kill(self, uids: set[str]) -> int:
        killed = 0
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.environ().get("ISTHMUS_TASK_UID") in uids:
                    proc.kill()
                    killed += 1
            except psutil.Error:
                continue
        return killed

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
