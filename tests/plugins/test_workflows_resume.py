"""Resuming workflows from states a killed bridge can leave in the store (engine.py).

The store is written as the engine would have left it, then a real in-process bridge starts
with `workflows` and `tasks` hosted on it (edge `bridge`): its start-up resumes the workflow,
whose task batches run for real on the bridge's tasks plugin.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from isthmus.bridge.app import Bridge, BridgeSettings
from isthmus.bridge.auth import TokenStore
from isthmus.config import AppConfig
from isthmus.plugins.workflows.store import WORKFLOW_FINAL, WorkflowStore
from isthmus.types import Principal, Role

ALICE = Principal("alice", Role.user, "id-alice")


def echo(word: str) -> dict[str, Any]:
    return {"kind": "tasks", "edge": "bridge", "retries": 1,
            "tasks": [{"executable": "/bin/echo", "arguments": [word]}]}


def stored(tmp_path: Path, document: dict[str, Any], steps: dict[str, dict[str, Any]]) -> None:
    """A RUNNING workflow of ALICE's with ``steps`` (id → stored fields) as a killed bridge left it."""
    store = WorkflowStore(tmp_path / "wf" / "workflows.sqlite")
    store.create("wf-1", "resume", ALICE.id, ALICE.to_wire(), document, {}, list(document["steps"]))
    for sid, fields in steps.items():
        store.set_step("wf-1", sid, **fields)
    store.close()


def resume(tmp_path: Path) -> dict[str, Any]:
    """Start a bridge on that store; the workflow as it ended (within 30 s)."""
    config = AppConfig(state_dir=tmp_path / "state",
                       plugins={"workflows": {"state_dir": str(tmp_path / "wf"), "poll_max": 0.5}})

    async def go() -> dict[str, Any]:
        bridge = Bridge(BridgeSettings(request_timeout=10.0), TokenStore(None, admin_token="ist_x"), config,
                        plugins=["workflows", "tasks"])
        await bridge.startup()
        try:
            plugin = bridge.local.records["workflows"].plugin  # type: ignore[union-attr]
            end = time.monotonic() + 30
            while (record := plugin.store.get("wf-1"))["state"] not in WORKFLOW_FINAL:
                assert time.monotonic() < end, record
                await asyncio.sleep(0.1)
            return dict(record)
        finally:
            await bridge.shutdown()

    return asyncio.run(go())


def test_a_step_stored_retrying_gets_its_next_attempt(tmp_path: Path) -> None:
    # killed between writing RETRYING (attempt 1 failed and was stopped) and the RUNNING of attempt 2
    doc = {"name": "resume", "steps": {"first": echo("one"), "second": {**echo("two"), "needs": ["first"]}}}
    stored(tmp_path, doc, {"first": {"state": "RETRYING", "attempt": 1, "error": "1 of 1 tasks did not finish DONE",
                                     "started": time.time()}})
    record = resume(tmp_path)
    assert record["state"] == "DONE", record
    first, second = record["steps"]["first"], record["steps"]["second"]
    assert first["attempt"] == 2 and first["outputs"]["stdout"] == ["one"]
    assert second["attempt"] == 1 and second["outputs"]["stdout"] == ["two"]


def test_a_stored_failed_step_ends_the_workflow_without_running_the_rest(tmp_path: Path) -> None:
    # killed after a step was written FAILED, before the workflow was: the independent step must not start
    doc = {"name": "resume", "steps": {"bad": echo("x"), "other": echo("y")}}
    stored(tmp_path, doc, {"bad": {"state": "FAILED", "attempt": 2, "error": "exit code 3"}})
    record = resume(tmp_path)
    assert record["state"] == "FAILED" and record["error"] == "step bad failed"
    assert record["steps"]["other"]["state"] == "SKIPPED" and record["steps"]["other"]["attempt"] == 0


def test_a_stored_cancelled_step_finishes_the_owners_cancel(tmp_path: Path) -> None:
    # killed during cancel_workflow: one step written CANCELLED, the workflow not yet
    doc = {"name": "resume", "steps": {"a": echo("a"), "b": {**echo("b"), "needs": ["a"]}, "c": echo("c")}}
    stored(tmp_path, doc, {"a": {"state": "CANCELLED", "attempt": 1, "error": "cancelled by its owner"}})
    record = resume(tmp_path)
    assert record["state"] == "CANCELLED" and record["error"] == "cancelled by its owner"
    assert {s: (v["state"], v["attempt"]) for s, v in record["steps"].items()} == {
        "a": ("CANCELLED", 1), "b": ("CANCELLED", 0), "c": ("CANCELLED", 0)}
