"""The workflows plugin: submit, follow and cancel workflows that span edges (docs/workflows.md).

It runs on the bridge (``isthmus bridge --plugins workflows``) and reaches the edges through
``Plugin.edge_calls`` as the workflow's owner: the principal that submitted it, stored with it,
so a workflow can do exactly what its owner could do by hand, and nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request

from ...config import default_state_dir
from ...errors import PluginError
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...types import Principal, Role, current_principal
from .config import WorkflowsConfig
from .edges import WorkflowEdges
from .engine import WorkflowRun
from .pools import check_pools
from .spec import load_document, parse
from .store import WorkflowStore

log = logging.getLogger("isthmus.plugins.workflows")

LIST_MAX = 1000
SHUTDOWN_WAIT = 10.0


class PluginWorkflows(Plugin):
    plugin_name = "workflows"
    title = "Workflows"
    version = "1.0.0"
    description = "Workflows across edges: jobs, task batches and transfers in a DAG, durable on the bridge."
    ui_module = "ui.js"
    config_model = WorkflowsConfig
    watches_topology = True  # validation checks edges and their plugins against the topology

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        base = Path(self.config.state_dir).expanduser() if self.config.state_dir else self._default_dir()
        self.store = WorkflowStore(base / "workflows.sqlite")
        self.runs: dict[str, WorkflowRun] = {}
        self.add_route_post("submit_workflow/{sid}", self.submit_workflow)
        self.add_route_post("validate_workflow/{sid}", self.validate_workflow, reads=True)
        self.add_route_get("workflow_status/{sid}/{wid}", self.workflow_status)
        self.add_route_get("list_workflows/{sid}", self.list_workflows)
        self.add_route_post("cancel_workflow/{sid}/{wid}", self.cancel_workflow)

    def _default_dir(self) -> Path:
        app_config = getattr(self.host, "app_config", None)
        root = app_config.resolved_state_dir() if app_config is not None else default_state_dir()
        return root / "workflows"

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="workload", label="Workload", icon="layers", order=50,
                            items=[MenuItem(id="workflows", label="Workflows", path="/workflows", icon="share")])]

    def _topology(self) -> dict[str, Any]:
        return dict(getattr(self.host, "topology", None) or {})

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_startup(self) -> None:
        """Resume every workflow that was running when the bridge stopped (or was killed)."""
        for wid in await asyncio.to_thread(self.store.running):
            try:
                self._start(wid)
            except Exception:
                log.exception("cannot resume workflow %s", wid)
                self.store.set_workflow(wid, "FAILED", "could not be resumed after a bridge restart")

    async def on_shutdown(self) -> None:
        """Stop following (the edges' work goes on; the next start resumes it)."""
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT)
        self.store.close()

    def _start(self, wid: str) -> WorkflowRun:
        record = self.store.get(wid)
        if record is None:
            raise KeyError(wid)
        owner = Principal.from_wire(record["principal"])
        if owner is None:
            raise ValueError(f"workflow {wid} has no owner")
        workflow = parse(record["document"], record["params"])
        edges = WorkflowEdges(self.edge_calls, owner, self._topology, self.config.edge_wait)

        def notify(data: dict[str, Any]) -> None:
            self.notify("workflow_status", data, owner=owner)

        run = WorkflowRun(wid, workflow, record, self.store, edges, notify, self.config.poll_max)
        run.task = asyncio.create_task(run.run(), name=f"workflow {wid}")
        run.task.add_done_callback(lambda t: self._ended(wid, t))
        self.runs[wid] = run
        return run

    def _ended(self, wid: str, task: asyncio.Task[None]) -> None:
        self.runs.pop(wid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("workflow %s stopped: %r", wid, task.exception())
            self.store.set_workflow(wid, "FAILED", f"internal error: {task.exception()!r}")

    # -- routes ---------------------------------------------------------------------------------

    async def _document(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        self._get_session(request.path_params["sid"])
        raw = await request.body()
        if len(raw) > self.config.max_document:
            raise PluginError(f"the workflow is over {self.config.max_document} bytes (max_document)", 413)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        if not isinstance(body, dict) or "document" not in body:
            raise PluginError('send {"document": <YAML or JSON text, or a mapping>, "params": {...}}', 422)
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise PluginError("params must be a mapping", 422)
        return load_document(body["document"]), params

    async def validate_workflow(self, request: Request) -> dict[str, Any]:
        """Check a workflow document as ``submit_workflow`` would, without running it."""
        document, params = await self._document(request)
        workflow = parse(document, params, self._topology())
        await check_pools(workflow, self.edge_calls, current_principal.get())
        return {"valid": True, "name": workflow.name, "order": workflow.order, "params": workflow.params}

    async def submit_workflow(self, request: Request) -> dict[str, Any]:
        """Validate (422 naming the step and field), store, and start a workflow; owned by the caller."""
        self.require_role(Role.user)
        who = current_principal.get()
        if who is None:
            raise PluginError("a workflow needs an owner: submit it through the bridge with a token", 401)
        document, params = await self._document(request)
        workflow = parse(document, params, self._topology())
        await check_pools(workflow, self.edge_calls, who)
        if len(self.runs) >= self.config.max_running:
            raise PluginError(f"{len(self.runs)} workflows are running on this bridge (max_running); "
                              "try again when some have finished", 429)
        wid = f"wf-{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(self.store.create, wid, workflow.name, who.id, who.to_wire(), document,
                                workflow.params, list(workflow.steps))
        self._start(wid)
        return {"workflow_id": wid, "name": workflow.name, "order": workflow.order}

    def _record(self, wid: str) -> dict[str, Any]:
        record = self.store.get(wid)
        who = current_principal.get()
        if record is None or not (who is None or who.owns(record["owner"])):
            raise PluginError(f"no workflow {wid}", 404)
        return record

    async def workflow_status(self, request: Request) -> dict[str, Any]:
        """The workflow's state, each step's state, attempt, error and outputs, and its document."""
        self._get_session(request.path_params["sid"])
        record = await asyncio.to_thread(self._record, request.path_params["wid"])
        workflow = parse(record["document"], record["params"])
        record.pop("principal")
        for sid, step in record["steps"].items():
            step["needs"] = workflow.steps[sid].needs
            step["kind"] = workflow.steps[sid].kind
            step["edges"] = workflow.steps[sid].edges()
        record["order"] = workflow.order
        return record

    async def list_workflows(self, request: Request) -> dict[str, Any]:
        """The caller's workflows (an admin's: everyone's), newest first: ``?limit=&before=``."""
        self._get_session(request.path_params["sid"])
        who = current_principal.get()
        owner = None if who is None or who.is_admin else who.id
        try:
            limit = int(request.query_params.get("limit") or LIST_MAX)
            before_raw = request.query_params.get("before")
            before = float(before_raw) if before_raw else None
        except ValueError as exc:
            raise PluginError("limit must be a whole number and before a time (the `created` of a workflow)",
                              422) from exc
        if not 1 <= limit <= LIST_MAX:
            raise PluginError(f"limit must be between 1 and {LIST_MAX}", 422)
        page = await asyncio.to_thread(self.store.page, owner, limit + 1, before)
        return {"workflows": page[:limit], "next": page[limit - 1]["created"] if len(page) > limit else None}

    async def cancel_workflow(self, request: Request) -> dict[str, Any]:
        """Cancel a running workflow: its running jobs and tasks are cancelled on their edges."""
        self._get_session(request.path_params["sid"])
        self.require_role(Role.user)
        wid = request.path_params["wid"]
        record = await asyncio.to_thread(self._record, wid)
        run = self.runs.get(wid)
        if run is None or run.task is None:
            return {"workflow_id": wid, "state": record["state"]}
        run.cancel()
        await asyncio.wait([run.task], timeout=120)
        return {"workflow_id": wid, "state": self.store.get(wid)["state"]}  # type: ignore[index]
