"""The step kinds: a psij job, a task batch, a transfer between edges.

Each runner gets the step's fields with ``${...}`` already substituted, the handle a previous
run stored (``{}`` for a fresh attempt) and ``save`` to store a new one; it returns the
step's outputs or raises ``StepFailed``. ``cancel`` stops what a handle names.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...sdk.calls import EdgeCallError
from .edges import SessionLost, StepFailed, WorkflowEdges, session_lost
from .spec import POOL_PLUGIN, substitute

FINAL = frozenset({"DONE", "FAILED", "CANCELLED"})
SUBMIT_BATCH = 4096  # tasks per submit call, as the tasks client sends them
RESULTS_KEPT = 1000  # tasks whose stdout and return value become outputs
TEXT_KEPT = 4096  # characters of each stdout kept in outputs
TRANSFER_TIMEOUT = 3600.0
LONG_POLL = 20.0
READS_AT_ONCE = 32  # get_task calls in flight for one step's results


@dataclass
class StepRun:
    edges: WorkflowEdges
    fields: dict[str, Any]
    context: dict[str, Any]  # for `task` + `count`: substituted per index
    handle: dict[str, Any]
    save: Callable[[dict[str, Any]], None]
    poll_max: float


async def _poll(interval: float, poll_max: float) -> float:
    await asyncio.sleep(interval)
    return min(interval * 1.5, poll_max)


# -- job ------------------------------------------------------------------------------------------

async def run_job(run: StepRun) -> dict[str, Any]:
    edge = run.fields["edge"]
    job_id = run.handle.get("job_id")
    if not job_id:
        body = {"job_spec": run.fields["spec"], "executor": run.fields.get("executor", "auto")}
        answer = await run.edges.plugin_call(edge, "psij", "POST", "submit_job/{sid}", json=body)
        job_id = answer["job_id"]
        run.handle = {"edge": edge, "job_id": job_id}
        run.save(run.handle)
    interval = 0.5
    while True:
        status = await run.edges.plugin_call(edge, "psij", "GET", f"job_status/{{sid}}/{job_id}")
        if status["state"] in FINAL:
            break
        interval = await _poll(interval, run.poll_max)
    if status["state"] != "DONE":
        raise StepFailed(f"job {job_id} (native id {status.get('native_id')}) ended {status['state']}, exit code "
                         f"{status.get('exit_code')}: {status.get('message') or status.get('stderr', '')[-500:]}")
    return {"job_id": job_id, "native_id": status.get("native_id"), "exit_code": status.get("exit_code"),
            "stdout": (status.get("stdout") or "")[-TEXT_KEPT:]}


async def cancel_job(edges: WorkflowEdges, handle: dict[str, Any]) -> None:
    for _ in range(10):  # 409 until psij follows a job it just submitted
        try:
            await edges.plugin_call(handle["edge"], "psij", "POST", f"cancel_job/{{sid}}/{handle['job_id']}")
            return
        except EdgeCallError as exc:
            if exc.status_code != 409:
                raise
            await asyncio.sleep(1.0)


# -- task batch -----------------------------------------------------------------------------------

def task_specs(fields: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    if "tasks" in fields:
        specs = fields["tasks"]
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise StepFailed("tasks must be a list of task specs")
        return specs
    count = fields.get("count")
    if type(count) is not int or not 1 <= count <= 100_000:
        raise StepFailed(f"count must be a whole number from 1 to 100000, not {count!r}")
    return [substitute(fields["task"], {**context, "index": i}) for i in range(count)]


async def run_tasks(run: StepRun) -> dict[str, Any]:
    edge = run.fields["edge"]
    pool = run.fields.get("pool")
    plugin = POOL_PLUGIN if pool is not None else "tasks"
    while True:
        try:
            if not run.handle.get("submitted"):
                await _submit_tasks(run, edge, plugin, pool)
            return await _follow_tasks(run, edge, plugin)
        except EdgeCallError as exc:
            if not session_lost(exc):
                raise
        except SessionLost:
            pass
        run.handle = {}  # the edge forgot the session (it restarted): the batch runs again
        run.save(run.handle)


async def _submit_tasks(run: StepRun, edge: str, plugin: str, pool: str | None) -> None:
    if run.handle.get("sid"):  # a submission broke off half-way: drop it, then start over
        await cancel_tasks(run.edges, run.handle)
    specs = task_specs(run.fields, run.context)
    sid = await run.edges.new_session(edge, plugin, **({"pool": pool} if pool is not None else {}))
    run.handle = {"edge": edge, "plugin": plugin, "sid": sid}
    run.save(run.handle)
    uids: list[str] = []
    for start in range(0, len(specs), SUBMIT_BATCH):
        answer = await run.edges.call(edge, "POST", f"/{plugin}/submit_tasks/{sid}",
                                      json={"tasks": specs[start:start + SUBMIT_BATCH]})
        uids += answer["uids"]
    run.handle = {**run.handle, "submitted": True, "uids": uids}
    run.save(run.handle)


async def _follow_tasks(run: StepRun, edge: str, plugin: str) -> dict[str, Any]:
    """Long-poll until the batch is final (a tasks session is the batch; in a pool, its uids),
    then read the states, and the records of the first ``RESULTS_KEPT`` tasks."""
    sid = run.handle["sid"]
    uids: list[str] = run.handle["uids"]
    base = f"/{plugin}"
    wait: dict[str, Any] = {"timeout": LONG_POLL} if plugin == "tasks" else {"timeout": LONG_POLL, "uids": uids}
    while True:
        answer = await run.edges.call(edge, "POST", f"{base}/wait_tasks/{sid}", json=wait, timeout=LONG_POLL + 30)
        if answer.get("unknown"):
            raise SessionLost()
        if answer.get("done"):
            break
    states: dict[str, int] = {}
    failed: list[str] = []
    for start in range(0, len(uids), SUBMIT_BATCH):
        page = await run.edges.call(edge, "POST", f"{base}/task_states/{sid}",
                                    json={"uids": uids[start:start + SUBMIT_BATCH]})
        if page.get("unknown"):
            raise SessionLost()
        for task in page["tasks"]:
            states[task["state"]] = states.get(task["state"], 0) + 1
            if task["state"] != "DONE":
                failed.append(task["uid"])
    if failed:
        first = await run.edges.call(edge, "GET", f"{base}/get_task/{sid}/{failed[0]}")
        why = first.get("exception") or (first.get("stderr") or "")[-500:] or f"exit code {first.get('exit_code')}"
        raise StepFailed(f"{len(failed)} of {len(uids)} tasks did not finish DONE ({states}); "
                         f"task {failed[0]}: {why}")
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def record(uid: str) -> dict[str, Any]:
        async with gate:
            return dict(await run.edges.call(edge, "GET", f"{base}/get_task/{sid}/{uid}"))

    results = await asyncio.gather(*(record(uid) for uid in uids[:RESULTS_KEPT]))
    return {"uids": uids, "count": len(uids), "states": states,
            "stdout": [(r.get("stdout") or "").strip()[-TEXT_KEPT:] for r in results],
            "return_values": [r.get("return_value") for r in results]}


async def cancel_tasks(edges: WorkflowEdges, handle: dict[str, Any]) -> None:
    try:
        await edges.call(handle["edge"], "POST", f"/{handle['plugin']}/cancel_all_tasks/{handle['sid']}")
    except EdgeCallError as exc:
        if not session_lost(exc):
            raise


# -- transfer -------------------------------------------------------------------------------------

async def run_transfer(run: StepRun) -> dict[str, Any]:
    source, target = run.fields["from"], run.fields["to"]
    files = run.fields["files"]
    if isinstance(files, str):
        files = files.split()
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise StepFailed(f"files must be a non-empty list of paths on {source}, not {files!r}")
    dest = str(run.fields["dest"]).rstrip("/") or "/"
    names = [posixpath.basename(f.rstrip("/")) for f in files]
    if len(set(names)) != len(names):
        raise StepFailed("two files of a transfer have the same name; they would overwrite each other in dest")
    await run.edges.plugin_call(target, "staging", "POST", "mkdir/{sid}",
                                json={"path": dest, "parents": True, "exist_ok": True})
    done: list[str] = []
    digests: dict[str, str] = {}
    total = 0
    for path, name in zip(files, names, strict=True):
        target_path = f"{dest}/{name}"
        size, digest = await _copy(run.edges, source, path, target, target_path)
        done.append(target_path)
        digests[target_path] = digest
        total += size
    return {"files": done, "sha256": digests, "bytes": total}


async def _copy(edges: WorkflowEdges, source: str, path: str, target: str, target_path: str) -> tuple[int, str]:
    """Download from ``source`` while uploading to ``target``, hashing the bytes in between:
    one chunk in flight at a time, so nothing is held whole; then three digests must agree."""
    hasher = hashlib.sha256()
    size = 0
    down = await edges.plugin_request(source, "staging", "GET", "download/{sid}", params={"path": path},
                                      timeout=TRANSFER_TIMEOUT)
    async with down:
        await down.raise_for_status(f"download {source}:{path}")

        async def body() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in down.aiter_bytes():
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        up = await edges.plugin_request(target, "staging", "PUT", "upload/{sid}", content=body(),
                                        params={"path": target_path, "offset": "0", "overwrite": "true"},
                                        timeout=TRANSFER_TIMEOUT)
        async with up:
            await up.raise_for_status(f"upload {target}:{target_path}")
            await up.read()
    digest = hasher.hexdigest()
    sent = await edges.plugin_call(source, "staging", "GET", "checksum/{sid}", params={"path": path})
    if sent["sha256"] != digest or sent["size"] != size:
        raise StepFailed(f"{source}:{path} changed while it was sent (its SHA-256 is {sent['sha256']}, "
                         f"the bytes sent hash to {digest})")
    landed = await edges.plugin_call(target, "staging", "POST", "commit/{sid}",
                                     json={"path": target_path, "size": size, "sha256": digest, "overwrite": True})
    if landed.get("sha256") != digest:
        raise StepFailed(f"{target}:{target_path} does not hash to the source's SHA-256 {digest}")
    return size, digest


RUNNERS: dict[str, Callable[[StepRun], Awaitable[dict[str, Any]]]] = {
    "job": run_job, "tasks": run_tasks, "transfer": run_transfer}


async def cancel(edges: WorkflowEdges, kind: str, handle: dict[str, Any]) -> None:
    """Stop the work ``handle`` names (a transfer needs nothing: its calls are already cancelled)."""
    if kind == "job" and handle.get("job_id"):
        await cancel_job(edges, handle)
    elif kind == "tasks" and handle.get("sid"):
        await cancel_tasks(edges, handle)
