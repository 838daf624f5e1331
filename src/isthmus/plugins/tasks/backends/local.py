"""A process pool on the edge, sized to the cores.

Workers come from a ``forkserver`` (not a fork of the multi-threaded edge) and spawn
executables themselves, so spawning never happens on the edge's uvloop.

The forkserver is started without the edge's secrets in its environment (the workers it
forks inherit that environment, and task code could read it), and every worker runs
:func:`~isthmus.plugins.tasks.worker.init_pool_worker`: it dies with its parent, so a
``kill -9`` of the edge leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psutil

from ...jobpolicy import scrub_environ
from ..worker import TASK_UID_VAR, init_pool_worker, run_chunk
from . import Backend

_forkserver_lock = threading.Lock()


def start_forkserver() -> None:
    """Start multiprocessing's forkserver (once) with the ``ISTHMUS_*`` variables left out.

    The edge's environment may hold secrets (its enrolment token, ``ISTHMUS_*`` settings); a
    forkserver started from it would pass them to every worker (``/proc/self/environ``
    included). The variables are out of ``os.environ`` only while the forkserver is first
    spawned (at plugin start-up), and put back at once.
    """
    from multiprocessing import forkserver

    with _forkserver_lock:
        if getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None) is not None:
            forkserver.ensure_running()  # started already: leave the edge's environment alone
            return
        removed = scrub_environ()
        try:
            forkserver.ensure_running()
        finally:
            os.environ.update(removed)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A forkserver pool whose workers die with their parent and start without secrets."""
    start_forkserver()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=init_pool_worker)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self._pool is None:
            self._pool = await asyncio.to_thread(worker_pool, self.workers)
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
                if proc.environ().get(TASK_UID_VAR) in uids:
                    proc.kill()
                    killed += 1
            except psutil.Error:
                continue
        return killed

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
