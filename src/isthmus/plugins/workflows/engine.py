"""Running one workflow: start each step when its needs are DONE, retry, time out, cancel.

Every state change is written to the store before it is announced, so a bridge killed at
any moment resumes from the store: DONE steps stay done, a RUNNING step follows the work
its stored handle names, a RETRYING step (its failed attempt already stopped) starts its next
attempt, PENDING steps start when their needs are met. A FAILED or CANCELLED step in a workflow
still RUNNING means the bridge died while ending it: the resume finishes that ending (stops the
other steps' work) instead of running on. Shutting the bridge down stops following (the edges'
work goes on); only ``cancel`` stops the work itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ...errors import PluginError
from ...sdk.calls import EdgeCallError
from .edges import StepFailed, WorkflowEdges
from .spec import Step, Workflow, substitute
from .steps import RUNNERS, StepRun, cancel
from .store import FINAL, WorkflowStore

log = logging.getLogger("isthmus.plugins.workflows")

Notify = Callable[[dict[str, Any]], None]
CANCEL_WAIT = 60.0
STARTABLE = ("PENDING", "RUNNING", "RETRYING")  # RETRYING: the bridge died before the next attempt began
OWNER_CANCEL = "cancelled by its owner"


class WorkflowRun:
    def __init__(self, wid: str, workflow: Workflow, record: dict[str, Any], store: WorkflowStore,
                 edges: WorkflowEdges, notify: Notify, poll_max: float) -> None:
        self.id = wid
        self.workflow = workflow
        self.store = store
        self.edges = edges
        self.notify = notify
        self.poll_max = poll_max
        self.states: dict[str, str] = {s: v["state"] for s, v in record["steps"].items()}
        self.attempts: dict[str, int] = {s: v["attempt"] for s, v in record["steps"].items()}
        self.handles: dict[str, dict[str, Any]] = {s: v["handle"] or {} for s, v in record["steps"].items()}
        self.outputs: dict[str, Any] = {s: v["outputs"] for s, v in record["steps"].items()
                                        if v["state"] == "DONE"}
        self.cancelling = False  # the owner cancelled: stop the steps' work on the edges
        self.stop_work = False  # cancelled, or another step failed
        self.task: asyncio.Task[None] | None = None

    # -- the DAG --------------------------------------------------------------------------------

    def cancel(self) -> None:
        self.cancelling = self.stop_work = True
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        running: dict[str, asyncio.Task[bool]] = {}
        try:
            failed = await self._ending_on_resume()
            while True:
                if failed is None and not self.cancelling:
                    for sid in self.workflow.order:
                        step = self.workflow.steps[sid]
                        if self.states[sid] in STARTABLE and sid not in running and \
                                all(self.states[n] == "DONE" for n in step.needs):
                            running[sid] = asyncio.create_task(self._step(step), name=f"workflow {self.id} {sid}")
                if not running:
                    break
                finished, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                for sid, task in list(running.items()):
                    if task in finished:
                        del running[sid]
                        ok = not task.cancelled() and task.exception() is None and task.result()
                        if not ok and failed is None and not task.cancelled():
                            failed = sid
                            self.stop_work = True
                            for other in running.values():  # the workflow failed: stop its other steps
                                other.cancel()
        except asyncio.CancelledError:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
            if self.cancelling:
                self._skip_rest("CANCELLED")
                self._finish("CANCELLED", OWNER_CANCEL)
            raise
        if self.cancelling:  # resumed half-way through its owner's cancel
            self._skip_rest("CANCELLED")
            self._finish("CANCELLED", OWNER_CANCEL)
        elif failed is not None:
            self._skip_rest("SKIPPED")
            self._finish("FAILED", f"step {failed} failed")
        elif all(s == "DONE" for s in self.states.values()):
            self._finish("DONE", None)
        else:  # cannot happen with a validated DAG; never leave a workflow RUNNING with nothing to run
            self._finish("FAILED", "no step can run: " + ", ".join(s for s, v in self.states.items() if v != "DONE"))

    async def _ending_on_resume(self) -> str | None:
        """A stored FAILED step (or, without one, a CANCELLED step: only its owner's cancel makes
        that) in a RUNNING workflow: the bridge died while ending it. Stop what its other steps
        still run on the edges, as the ending would have; the failed step, if any."""
        failed = next((sid for sid in self.workflow.order if self.states[sid] == "FAILED"), None)
        if failed is None and "CANCELLED" not in self.states.values():
            return None
        self.cancelling = failed is None
        self.stop_work = True
        for sid in self.workflow.order:
            if self.states[sid] == "RUNNING":  # a RETRYING step's attempt was stopped already
                await self._stop(self.workflow.steps[sid])
        return failed

    def _skip_rest(self, state: str) -> None:
        for sid, current in self.states.items():
            if current not in FINAL:
                self._set(sid, state, finished=time.time())

    def _finish(self, state: str, error: str | None) -> None:
        self.store.set_workflow(self.id, state, error)
        self.notify({"workflow": self.id, "name": self.workflow.name, "step": None, "state": state,
                     "workflow_state": state, "error": error})

    def _set(self, sid: str, state: str, error: str | None = None, **fields: Any) -> None:
        self.states[sid] = state
        self.store.set_step(self.id, sid, state=state, error=error, **fields)
        self.notify({"workflow": self.id, "name": self.workflow.name, "step": sid, "state": state,
                     "attempt": self.attempts.get(sid, 0), "error": error, "workflow_state": "RUNNING"})

    # -- one step -------------------------------------------------------------------------------

    def _context(self) -> dict[str, Any]:
        return {"params": self.workflow.params, "workflow": {"id": self.id, "name": self.workflow.name},
                "steps": {sid: {"outputs": out} for sid, out in self.outputs.items()}}

    async def _step(self, step: Step) -> bool:
        """Run ``step`` to DONE (True) or FAILED (False), retrying up to ``retries`` times."""
        sid = step.id
        resuming = self.states[sid] == "RUNNING" and self.attempts[sid] > 0
        while True:
            if not resuming:
                self.attempts[sid] += 1
                self.handles[sid] = {}
                self._set(sid, "RUNNING", attempt=self.attempts[sid], handle=None, started=time.time())
            resuming = False
            error = await self._attempt(step)
            if error is None:
                return True
            if self.attempts[sid] > step.retries:
                self._set(sid, "FAILED", error, finished=time.time())
                return False
            log.info("workflow %s step %s attempt %d failed (%s); retrying", self.id, sid, self.attempts[sid], error)
            self._set(sid, "RETRYING", error)

    async def _attempt(self, step: Step) -> str | None:
        """One attempt; None when DONE, else why it failed."""
        sid = step.id
        context = self._context()

        def save(handle: dict[str, Any]) -> None:
            self.handles[sid] = handle
            self.store.set_step(self.id, sid, handle=handle)

        try:
            fields = substitute({k: v for k, v in step.raw.items() if k not in ("task", "outputs")}, context)
            if "task" in step.raw:
                fields["task"] = step.raw["task"]
            run = StepRun(self.edges, fields, context, self.handles[sid], save, self.poll_max)
            async with asyncio.timeout(step.timeout):
                outputs = await RUNNERS[step.kind](run)
            declared = substitute(step.raw.get("outputs") or {}, {**context, "self": outputs})
        except asyncio.CancelledError:
            await self._stop(step)
            raise
        except TimeoutError:
            await self._stop(step, always=True)
            return f"timed out after {step.timeout:g} s (attempt {self.attempts[sid]})"
        except (StepFailed, EdgeCallError, PluginError) as exc:
            await self._stop(step, always=True)
            return str(exc)
        except Exception as exc:  # a bug must fail the step, not hang the workflow
            log.exception("workflow %s step %s", self.id, sid)
            await self._stop(step, always=True)
            return f"internal error: {exc!r}"
        self.outputs[sid] = {**outputs, **declared}
        self._set(sid, "DONE", outputs=self.outputs[sid], finished=time.time())
        return None

    async def _stop(self, step: Step, always: bool = False) -> None:
        """Cancel the step's work on its edge: on cancel, failure or timeout, never on shutdown."""
        if not (always or self.stop_work):
            return
        handle = self.handles.get(step.id) or {}
        if handle:
            try:
                await asyncio.shield(asyncio.wait_for(cancel(self.edges, step.kind, handle), CANCEL_WAIT))
            except Exception as exc:  # noqa: BLE001 - reported; the step's state says what happened
                log.warning("workflow %s: cancelling step %s failed: %s", self.id, step.id, exc)
        if self.stop_work and not always:
            why = OWNER_CANCEL if self.cancelling else "stopped: another step failed"
            self._set(step.id, "CANCELLED", why, finished=time.time())
