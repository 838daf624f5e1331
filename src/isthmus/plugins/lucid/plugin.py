"""lucid: pilot jobs in the first guide's words, on top of the ``pilots`` plugin's pools.

    POST pilot_submit/{sid}        {"nodes": 1, "cores": 4, "runtime": 30, "queue": "batch", "size": 2}
                                   → {"pilot_id": "lucid-3f2a9c", ...}   (a pool of up to ``size`` pilots)
    POST task_submit/{sid}         {"pilot_id": ..., "tasks": [{"executable": ..., "arguments": [...]}]}
                                   → {"task_ids": [...]}   (the tasks plugin's task specs)
    GET  task_wait/{sid}/{tid}     ?timeout=30 → the task's record once final (``final`` says whether it is)
    POST pilot_cancel/{sid}/{pid}  cancel the pilots' batch jobs and the tasks not finished
    GET  pilot_status/{sid}/{pid}  the pool, its pilots and queue

A Lucid pilot is a pool: ``runtime`` is minutes of walltime (or ``walltime`` in seconds),
``queue`` the partition, ``project`` the account, ``size`` how many pilot jobs at most.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, cast

from fastapi import Request
from pydantic import ValidationError

from ...errors import PluginError
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from ...types import Role
from ..pilots.spec import PoolSpec

if TYPE_CHECKING:  # the pilots plugin is found on the host; importing it would load it even when disabled
    from ..pilots.plugin import PluginPilots

ALIASES = {"runtime": "walltime", "queue": "partition", "project": "account", "size": "max_size",
           "gpus_per_node": "gpus", "cores_per_node": "cores", "pilot_id": "name"}
MAX_WAIT = 50.0


class LucidSession(PluginSession):
    """The pilots a client submitted through this session; the latest is the default for tasks."""

    def __init__(self, sid: str, **_: Any) -> None:
        super().__init__(sid)
        self.pilots: list[str] = []


class PluginLucid(Plugin):
    plugin_name = "lucid"
    title = "Lucid"
    description = "Pilot jobs, the Lucid way: submit pilots, then tasks into them, then wait for the tasks."
    version = "0.1.0"
    requires = ("pilots",)
    session_class = LucidSession

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.add_route_post("pilot_submit/{sid}", self.pilot_submit)
        self.add_route_post("task_submit/{sid}", self.task_submit)
        self.add_route_get("task_wait/{sid}/{tid}", self.task_wait)
        self.add_route_post("pilot_cancel/{sid}/{pid}", self.pilot_cancel)
        self.add_route_get("pilot_status/{sid}/{pid}", self.pilot_status)

    def _pilots(self) -> PluginPilots:
        host = self.host
        found = next((p for p in host.active() if p.key() == "pilots"), None) if host is not None else None
        if found is None:
            raise PluginError("lucid runs on the pilots plugin: enable pilots (and psij) on this edge", 503)
        return cast("PluginPilots", found)

    def _session(self, request: Request) -> LucidSession:
        session = self._get_session(request.path_params["sid"])
        assert isinstance(session, LucidSession)
        return session

    async def pilot_submit(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        self.require_role(Role.user)
        body = await request.json()
        if not isinstance(body, dict):
            raise PluginError("send a pilot description: {\"cores\": 1, \"runtime\": 10, \"size\": 1, ...}", 422)
        description = body.get("pilot_description", body)
        if not isinstance(description, dict):
            raise PluginError("pilot_description must be an object", 422)
        spec_in = {ALIASES.get(k, k): v for k, v in description.items() if k != "resource"}
        if "walltime" in spec_in and "runtime" in description:
            spec_in["walltime"] = int(float(description["runtime"]) * 60)  # Lucid's runtime is in minutes
        spec_in.setdefault("name", f"lucid-{uuid.uuid4().hex[:6]}")
        try:
            spec = PoolSpec.model_validate(spec_in)
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(description)", "problem": e["msg"]}
                      for e in exc.errors()]
            raise PluginError({"message": f"the pilot description has {len(errors)} problem(s)",
                               "errors": errors}, 422) from exc
        pool = await self._pilots().create(spec)
        session.pilots.append(spec.name)
        return {"pilot_id": spec.name, **pool}

    async def task_submit(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        self.require_role(Role.user)
        body = await request.json()
        if not isinstance(body, dict):
            raise PluginError("send {\"pilot_id\": ..., \"tasks\": [{\"executable\": ...}, ...]}", 422)
        tasks = body.get("tasks", [body["task"]] if "task" in body else None)
        if not isinstance(tasks, list):
            raise PluginError("send tasks: [{...}] (or one task: {...})", 422)
        pilot_id = body.get("pilot_id") or (session.pilots[-1] if session.pilots else None)
        if not isinstance(pilot_id, str):
            raise PluginError("name the pilot (pilot_id), or submit one with pilot_submit first", 422)
        return {"task_ids": await self._pilots().submit(pilot_id, session.sid, tasks), "pilot_id": pilot_id}

    async def task_wait(self, request: Request) -> dict[str, Any]:
        self._session(request)
        try:
            timeout = min(max(float(request.query_params.get("timeout", 30)), 0.0), MAX_WAIT)
        except ValueError as exc:
            raise PluginError("timeout must be seconds", 422) from exc
        record = await self._pilots().wait_record(request.path_params["tid"], timeout)
        return {**record, "task_id": record["uid"], "final": record["state"] in ("DONE", "FAILED", "CANCELLED")}

    async def pilot_cancel(self, request: Request) -> dict[str, Any]:
        self._session(request)
        self.require_role(Role.user)
        return await self._pilots().cancel(request.path_params["pid"])

    async def pilot_status(self, request: Request) -> dict[str, Any]:
        self._session(request)
        pilots = self._pilots()
        return pilots.pool_for(request.path_params["pid"]).public()
