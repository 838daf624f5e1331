"""No batch scheduler: the edge runs on a workstation or a login node without one."""

from __future__ import annotations

from .base import BatchSystem, Job, Node, Partition


class NoScheduler(BatchSystem):
    name = "none"
    psij_executor = "local"

    async def partitions(self) -> list[Partition]:
        return []

    async def nodes(self) -> list[Node]:
        return []

    async def jobs(self, user: str | None = None, partition: str | None = None,
                   include_finished: bool = False) -> list[Job]:
        return []

    async def cancel(self, job_id: str) -> None:
        from ..errors import SchedulerError

        raise SchedulerError(f"no scheduler on this edge, so no job {job_id} to cancel")
