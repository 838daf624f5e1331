"""Dask distributed: an existing scheduler address, or a dask-jobqueue cluster on Slurm/PBS.

The scale-out path: Isthmus does not manage workers itself.
"""

from __future__ import annotations

from typing import Any, cast

from ..config import DaskTLS
from ..worker import run_chunk
from . import Backend

JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster", "sge": "SGECluster"}


class DaskBackend(Backend):
    name = "dask"

    def __init__(self, address: str | None = None, jobqueue: dict[str, Any] | None = None,
                 tls: DaskTLS | None = None) -> None:
        if not address and not jobqueue:
            raise ValueError("the dask backend needs an address (tcp://host:8786) or a dask_jobqueue setting")
        self.address = address
        self.jobqueue = dict(jobqueue or {})
        self.tls = tls
        self.client: Any = None
        self.cluster: Any = None

    async def start(self) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ValueError("the dask backend needs dask[distributed]: pip install 'isthmus[dask]'") from exc
        address = self.address
        if address is None:
            import dask_jobqueue

            kind = str(self.jobqueue.pop("kind", "slurm"))
            jobs = int(self.jobqueue.pop("jobs", 1))
            if kind not in JOBQUEUE:
                raise ValueError(f"dask_jobqueue kind must be one of {', '.join(JOBQUEUE)}")
            self.cluster = await getattr(dask_jobqueue, JOBQUEUE[kind])(asynchronous=True, **self.jobqueue)
            self.cluster.scale(jobs=jobs)
            address = self.cluster
        self.client = await Client(address, asynchronous=True, security=self._security())

    def _security(self) -> Any:
        """Mutual TLS when configured (encryption then required: a tcp:// address is refused)."""
        if self.tls is None or self.address is None:
            return None
        from distributed.security import Security

        return Security(require_encryption=True, tls_ca_file=self.tls.ca_file, tls_client_cert=self.tls.cert,
                        tls_client_key=self.tls.key)

    async def run_chunk(self, tasks: list[dict[str, Any]], tail: int) -> list[dict[str, Any]]:
        future = self.client.submit(run_chunk, tasks, tail, pure=False)
        return cast(list[dict[str, Any]], await future)  # distributed is untyped: its Future gives Any

    def parallelism(self) -> int:
        """Two chunks per worker thread. The asynchronous client's ``nthreads()`` is a coroutine (its
        sum always failed: 2 chunks, however big the cluster); its cached ``scheduler_info`` has the total."""
        info = self.client.scheduler_info() if self.client is not None else {}
        return max(2, int(info.get("total_threads") or 1) * 2)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.cluster is not None:
            await self.cluster.close()
