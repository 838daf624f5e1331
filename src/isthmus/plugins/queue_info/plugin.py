"""queue_info: partitions/queues with free counts, jobs, allocations, cancel — from the scheduler layer.

Cancel rule: every principal acts as the edge's one Unix user, so "the job is the edge
user's" says nothing about *which* principal it belongs to. A principal may cancel a
scheduler job only when the psij plugin recorded that principal as its submitter
(``submitters.py``); admins may cancel any of the edge user's jobs; in-process callers
(no principal) are trusted.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any

from fastapi import Request

from ... import schedulers
from ...config import default_state_dir, load_plugin_config
from ...errors import PluginError
from ...schedulers.hostlist import expand
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from ...types import Role
from .cache import SharedCache
from .config import QueueInfoConfig
from .submitters import PSIJ_DB, executors_for, submitter

log = logging.getLogger("isthmus.plugins.queue_info")
ALL_USERS = "*"
Rows = list[dict[str, Any]]  # what the shared cache holds: partitions, jobs or allocations as dicts


def allocation_from_env(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The batch allocation this process runs in, read from the scheduler's environment."""
    env = dict(os.environ if env is None else env)
    if "SLURM_JOB_ID" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        return {"scheduler": "slurm", "job_id": env["SLURM_JOB_ID"], "partition": env.get("SLURM_JOB_PARTITION"),
                "account": env.get("SLURM_JOB_ACCOUNT"), "nodes": expand(nodelist) if nodelist else [],
                "num_nodes": int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 0),
                "cpus_on_node": int(env.get("SLURM_CPUS_ON_NODE") or 0)}
    if "PBS_JOBID" in env:
        nodes: list[str] = []
        nodefile = env.get("PBS_NODEFILE")
        if nodefile and os.path.exists(nodefile):
            with open(nodefile) as fh:
                for line in fh:
                    if line.strip() and line.strip() not in nodes:
                        nodes.append(line.strip())
        return {"scheduler": "pbs", "job_id": env["PBS_JOBID"], "partition": env.get("PBS_QUEUE"),
                "account": env.get("PBS_ACCOUNT"), "nodes": nodes, "num_nodes": len(nodes), "cpus_on_node": None}
    return None


class QueueInfoSession(PluginSession):
    """Sessions carry no state: answers come from the plugin's shared cache."""


class PluginQueueInfo(Plugin):
    plugin_name = "queue_info"
    title = "Queues"
    description = "Partitions and queues with free capacity, jobs, allocations; cancel jobs you submitted."
    version = "0.1.0"
    ui_module = "ui.js"
    session_class = QueueInfoSession
    config_model = QueueInfoConfig
    ui_config = {
        "icon": "📋",
        "title": "Queues",
        "description": "Partitions and queues with free capacity, your jobs and allocations.",
        "monitors": [
            {"id": "partitions", "title": "Partitions", "type": "table", "endpoint": "get_info/{sid}",
             "columns": ["name", "state", "idle_nodes", "total_nodes", "idle_cpus", "total_cpus", "max_time"],
             "refresh": 15},
            {"id": "jobs", "title": "My jobs", "type": "table", "endpoint": "list_all_jobs/{sid}",
             "columns": ["job_id", "name", "partition", "state", "nodes", "reason"], "refresh": 10},
        ],
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.cache: SharedCache[Rows] = SharedCache(self.config.cache_ttl)
        self.edge_user = getpass.getuser()
        self._prefetch: asyncio.Task[None] | None = None
        self.add_route_get("backend", self.backend)
        self.add_route_get("job_allocation", self.job_allocation)
        self.add_route_get("get_info/{sid}", self.get_info)
        self.add_route_get("list_jobs/{sid}", self.list_jobs)
        self.add_route_get("list_all_jobs/{sid}", self.list_all_jobs)
        self.add_route_get("list_allocations/{sid}", self.list_allocations)
        self.add_route_post("cancel_job/{sid}", self.cancel_job)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="workload", label="Workload", icon="layers", order=50,
                            items=[MenuItem(id="queues", label="Queues", path="/queue_info", icon="list")])]

    async def on_startup(self) -> None:
        if self.config.prefetch:
            self._prefetch = asyncio.create_task(self._warm())

    async def on_shutdown(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()

    async def on_config_reload(self, config: QueueInfoConfig) -> None:
        self.cache.ttl = config.cache_ttl

    async def _warm(self) -> None:
        try:
            await self._partitions(False)
            await self._jobs(None, None, False)
        except Exception as exc:  # noqa: BLE001 - a prefetch failure shows up on the first real call
            log.warning("queue_info prefetch failed: %s", exc)

    # -- data, through the shared cache ---------------------------------------------------------

    @staticmethod
    def _scheduler() -> schedulers.BatchSystem:
        try:
            return schedulers.current()
        except LookupError as exc:
            raise PluginError(str(exc), 503) from exc

    async def _call(self, key: Hashable, fetch: Callable[[], Awaitable[Rows]], force: bool) -> Rows:
        # a SchedulerError answers its own status (502/503/504, isthmus.errors)
        return await self.cache.get(key, fetch, force)

    async def _partitions(self, force: bool) -> list[dict[str, Any]]:
        system = self._scheduler()

        async def fetch() -> list[dict[str, Any]]:
            return [p.to_dict() for p in await system.partitions()]

        return await self._call(("partitions", system.name), fetch, force)

    async def _jobs(self, user: str | None, queue: str | None, force: bool) -> list[dict[str, Any]]:
        system = self._scheduler()
        who = self._user(user)

        async def fetch() -> list[dict[str, Any]]:
            return [j.to_dict() for j in await system.jobs(user=who, include_finished=False)]

        jobs = await self._call(("jobs", system.name, who), fetch, force)
        return [j for j in jobs if queue is None or j["partition"] == queue]

    def _user(self, user: str | None) -> str | None:
        if user in (None, ""):
            return self.edge_user
        return None if user == ALL_USERS else user

    @staticmethod
    def _force(request: Request) -> bool:
        return request.query_params.get("force", "").lower() in ("1", "true", "yes")

    # -- routes ---------------------------------------------------------------------------------

    async def backend(self, request: Request) -> dict[str, Any]:
        return {"backend": self._scheduler().name}

    async def job_allocation(self, request: Request) -> dict[str, Any]:
        return {"allocation": allocation_from_env()}

    async def get_info(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        return {"backend": self._scheduler().name, "partitions": await self._partitions(self._force(request))}

    async def list_jobs(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        queue = request.query_params.get("queue")
        if not queue:
            raise PluginError("name a queue: list_jobs/{sid}?queue=<partition>", 422)
        jobs = await self._jobs(request.query_params.get("user"), queue, self._force(request))
        return {"queue": queue, "jobs": jobs}

    async def list_all_jobs(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        return {"jobs": await self._jobs(request.query_params.get("user"), None, self._force(request))}

    async def list_allocations(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        system = self._scheduler()
        who = self._user(request.query_params.get("user")) or self.edge_user

        async def fetch() -> list[dict[str, Any]]:
            return [a.to_dict() for a in await system.allocations(who)]

        return {"user": who, "allocations": await self._call(("alloc", system.name, who), fetch,
                                                              self._force(request))}

    def _psij_database(self) -> Path:
        """Where psij keeps its job records: configured, else the running psij plugin's, else psij's default."""
        if self.config.psij_database:
            return Path(self.config.psij_database).expanduser()
        host = self.host
        if host is None:
            return default_state_dir() / "psij" / PSIJ_DB
        for plugin in host.active():
            store_path = getattr(getattr(plugin, "store", None), "path", None)
            if type(plugin).key() == "psij" and store_path:
                return Path(store_path)
        try:
            from ..psij.config import PsijConfig

            psij_config, _ = load_plugin_config("psij", PsijConfig, host.app_config, host.environ)
            state_dir = getattr(psij_config, "state_dir", None)
        except Exception as exc:  # noqa: BLE001 - no readable psij config: its default place
            log.debug("psij config unreadable (%s); using its default state directory", exc)
            state_dir = None
        if state_dir:
            return Path(state_dir).expanduser() / PSIJ_DB
        return host.app_config.resolved_state_dir() / "psij" / PSIJ_DB

    def submitter(self, system: schedulers.BatchSystem, job_id: str) -> str | None:
        """The principal id that submitted scheduler job ``job_id`` through Isthmus (None: no record)."""
        return submitter(self._psij_database(), job_id, executors_for(system.psij_executor))

    async def cancel_job(self, request: Request) -> dict[str, Any]:
        """Cancel a job the caller submitted through Isthmus (admins: any job of the edge's user)."""
        self._get_session(request.path_params["sid"])
        self.require_role(Role.user)
        body = await request.json()
        job_id = str(body.get("job_id") or "")
        if not job_id:
            raise PluginError("cancel_job needs {\"job_id\": ...}", 422)
        system = self._scheduler()
        who = self.principal()
        if who is not None and not who.is_admin:
            owner = await asyncio.to_thread(self.submitter, system, job_id)
            if owner != who.id:
                raise PluginError(f"job {job_id} was not submitted through Isthmus by you; only the principal "
                                  "that submitted it (through the psij plugin) or an admin may cancel it", 403)
        job = await system.job(job_id)  # a SchedulerError answers its own status
        if job is None:
            raise PluginError(f"no job {job_id}", 404)
        if job.user and job.user != self.edge_user:
            raise PluginError(f"job {job_id} belongs to {job.user}; this edge acts for {self.edge_user} "
                              "and cancels only that user's jobs", 403)
        await system.cancel(job_id)
        self.cache.clear()
        return {"job_id": job_id, "status": "cancel requested"}
