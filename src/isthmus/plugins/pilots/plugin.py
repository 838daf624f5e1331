"""pilots: pools of pilot jobs; tasks submitted to a pool run inside the pilots' allocations.

A pool submits pilot jobs through the edge's psij plugin (``jobs.py``). Each pilot runs a
child edge, ``<edge>.<pool>.<jobid>``, with the ``tasks`` plugin, enrolled with a child token
this edge minted for that name alone. Tasks wait in the pool's queue (SQLite) and are handed
to ready pilots' tasks sessions through ``Plugin.edge_calls`` — a few hundred per call, never
more than ``cores x prefetch`` per pilot — and followed there until final. The pool grows
while tasks wait (up to ``max_size``) and releases pilots idle for ``idle_timeout``. A pilot
whose job ends takes no task with it: its running tasks go back to the front of the queue,
at most ``retries`` times each, then FAIL with the reason.

The task routes have the tasks plugin's names and answers, so ``TasksClient`` (and
``PilotsClient``, which adds ``pool=``) work against this plugin; uids are ``pt.<n>``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError

from ...config import default_state_dir
from ...errors import PluginError
from ...jobstates import JobState
from ...sdk.calls import EdgeCallError
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from ...types import Principal, Role, current_principal
from ..jobpolicy import resolve_executable
from ..tasks.wire import GET_TASKS_MAX, expand
from .config import PilotsConfig
from .jobs import TOKEN_MARGIN, PilotJobs, child_name
from .pool import ENDED, READY, RELEASING, SUBMITTED, Pilot, Pool, TaskRef, to_release, wanted_pilots
from .spec import PoolSpec
from .store import PilotStore, number_of, uid_of

log = logging.getLogger("isthmus.plugins.pilots")
FINAL = ("DONE", "FAILED", "CANCELLED")
SEND_MAX = 512  # tasks per submit call to a pilot
FETCH_CONCURRENCY = 32  # get_task calls in flight per pilot (a child without get_tasks)
SUSPECT_WAIT = 3.0  # seconds a killed-looking result waits: did its pilot die under it?
PAGE_MAX = 10_000


class PilotsSession(PluginSession):
    """A client's handle; ``pool`` is where its submissions go unless they name another."""

    def __init__(self, sid: str, pool: str | None = None, **_: Any) -> None:
        super().__init__(sid)
        self.pool = pool


class PluginPilots(Plugin):
    plugin_name = "pilots"
    title = "Pilots"
    description = "Pools of pilot jobs: acquire allocations once, run many tasks inside them."
    version = "0.1.0"
    requires = ("psij",)
    ui_module = "ui.js"
    session_class = PilotsSession
    config_model = PilotsConfig

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        cfg: PilotsConfig = self.config
        app_config = getattr(self.host, "app_config", None)
        root = app_config.resolved_state_dir() if app_config is not None else default_state_dir()
        self.dir = Path(cfg.state_dir).expanduser() if cfg.state_dir else root / "pilots"
        self.store = PilotStore(self.dir / "pilots.sqlite")
        self.pools: dict[str, Pool] = {}
        self.tasks: dict[int, TaskRef] = {}  # unfinished tasks only
        self.unfinished_by_owner: Counter[str] = Counter()
        self.jobs: PilotJobs | None = None
        self._finals = asyncio.Event()  # pulsed when tasks become final (wait_tasks)
        self._wake = asyncio.Event()  # new work: schedule now, not at the next tick
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._changes: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._pool_seen: dict[str, tuple[Principal, tuple[Any, ...]]] = {}  # pool_status's last word per pool
        for path, handler in (("create_pool/{sid}", self.create_pool), ("cancel_pool/{sid}/{name}", self.cancel_pool),
                              ("submit_tasks/{sid}", self.submit_tasks),
                              ("cancel_task/{sid}/{uid}", self.cancel_task),
                              ("cancel_all_tasks/{sid}", self.cancel_all_tasks)):
            self.add_route_post(path, handler)
        self.add_route_post("wait_tasks/{sid}", self.wait_tasks, reads=True)
        self.add_route_post("task_states/{sid}", self.task_states, reads=True)
        self.add_route_get("list_pools", self.list_pools)
        self.add_route_get("get_pool/{name}", self.get_pool)
        self.add_route_get("list_tasks/{sid}", self.list_tasks)
        self.add_route_get("get_task/{sid}/{uid}", self.get_task)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="workload", label="Workload", icon="layers", order=50,
                            items=[MenuItem(id="pilots", label="Pilots", path="/pilots", icon="cpu")])]

    def _create_session(self, sid: str, **kwargs: Any) -> PluginSession:
        unknown = set(kwargs) - {"pool"}
        if unknown:
            raise PluginError(f"register_session takes pool, not {', '.join(sorted(unknown))}", 422)
        pool = kwargs.get("pool")
        if pool is not None and not isinstance(pool, str):
            raise PluginError("pool must be a pool name", 422)
        return PilotsSession(sid, pool)

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_startup(self) -> None:
        host = self.host
        psij = next((p for p in host.active() if p.plugin_name == "psij"), None) if host is not None else None
        if psij is None:
            raise PluginError("the pilots plugin submits pilot jobs through the psij plugin: enable psij too", 503)
        self.jobs = PilotJobs(psij, self.dir, self.config)
        await asyncio.to_thread(self._restore)
        for pool in self.pools.values():
            for pilot in pool.pilots.values():
                if pilot.state == READY:
                    self._spawn(self._follow_tasks(pool, pilot))
        self._loop_task = asyncio.create_task(self._run(), name="pilots-scheduler")

    async def on_shutdown(self) -> None:
        tasks = [t for t in (self._loop_task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()

    def _restore(self) -> None:
        """After a restart: pools, their live pilots (psij re-attached the jobs) and the queue
        (in a thread: it reads SQLite; on_startup then follows the ready pilots again)."""
        live = self.store.pilots(live=True)
        for rec in self.store.pools(state=None):
            has_pilots = any(p["pool"] == rec["name"] for p in live)
            if rec["state"] != "ACTIVE" and not has_pilots:
                continue
            pool = Pool(PoolSpec.model_validate(rec["spec"]), Principal.from_wire(rec["owner"]) or _local(),
                        created=rec["created"], cancelled=rec["state"] != "ACTIVE")
            self.pools[pool.name] = pool
        for rec in live:
            owner_pool = self.pools.get(rec["pool"])
            if owner_pool is None:
                continue
            owner_pool.pilots[rec["job_id"]] = Pilot(rec["job_id"], rec["pool"], state=rec["state"],
                                               native_id=rec["native_id"], edge=rec["edge"], sid=rec["sid"],
                                               created=rec["created"])
        for n, pool_name, owner, sid, state, pilot_id, remote, attempts in self.store.unfinished():
            ref = TaskRef(n, pool_name, owner, sid, state, pilot_id, remote, attempts)
            home = self.pools.get(pool_name)
            self.tasks[n] = ref
            self.unfinished_by_owner[owner] += 1
            pilot = home.pilots.get(pilot_id) if home is not None and pilot_id else None
            if home is not None and state == "RUNNING" and pilot is not None and remote:
                pilot.inflight[remote] = n
            elif home is not None:
                ref.state, ref.pilot, ref.remote = "PENDING", None, None
                home.queue.append(n)
        if self.tasks or self.pools:
            log.info("restored %d pools, %d unfinished tasks", len(self.pools), len(self.tasks))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def _calls(self) -> Any:
        calls = self.edge_calls
        if not hasattr(calls, "mint_child_token"):
            raise PluginError("pilots run only on an edge (its children connect to the bridge it uses)", 503)
        return calls

    # -- the scheduler ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pilots: a scheduling pass failed")
            self._flush_events()
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.tick)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _tick(self) -> None:
        now = time.time()
        per_pilot = 0
        for pool in list(self.pools.values()):
            for pilot in list(pool.pilots.values()):
                self._follow_job(pool, pilot, now)
            if pool.cancelled:
                if not pool.pilots:
                    del self.pools[pool.name]
                continue
            per_pilot = pool.spec.slots * self.config.prefetch
            live = sum(1 for p in pool.pilots.values() if p.state in (SUBMITTED, READY))
            for _ in range(wanted_pilots(pool, per_pilot) - live):
                self._start_pilot(pool)
            for pilot in pool.pilots.values():
                if pilot.inflight or pool.queue:
                    pilot.idle_since = None
                elif pilot.idle_since is None:
                    pilot.idle_since = now
            idle = pool.spec.idle_timeout or self.config.idle_timeout
            for pilot in to_release(pool, now, idle):
                self._spawn(self._release(pool, pilot, f"released after {idle:g} s without tasks"))
            for pilot in pool.pilots.values():
                if pool.queue and pilot.state == READY and not pilot.busy and len(pilot.inflight) < per_pilot:
                    pilot.busy = True
                    self._spawn(self._dispatch(pool, pilot, per_pilot))

    def _start_pilot(self, pool: Pool) -> None:
        assert self.jobs is not None
        job_id = uuid.uuid4().hex[:12]
        pilot = Pilot(job_id, pool.name, created=time.time(), busy=True)
        pool.pilots[job_id] = pilot
        self.store.put_pilot(job_id, pool.name)
        calls = self._calls

        async def submit() -> None:
            assert self.jobs is not None
            try:
                await asyncio.to_thread(self.jobs.submit, pool.spec, pool.name, job_id, pool.owner.id,
                                        list(calls.bridge_urls))
            except Exception as exc:  # noqa: BLE001 - recorded on the pilot, the pool tries again
                log.warning("pool %s: submitting a pilot failed: %s", pool.name, exc)
                self._end_pilot(pool, pilot, f"submission failed: {exc}")
            finally:
                pilot.busy = False

        self._spawn(submit())
        log.info("pool %s: submitted pilot %s", pool.name, job_id)

    def _follow_job(self, pool: Pool, pilot: Pilot, now: float) -> None:
        """Track the pilot's batch job (psij's record): its id, its end; vouch for it; connect."""
        assert self.jobs is not None
        if pilot.busy and pilot.state == SUBMITTED and pilot.native_id is None:
            return  # still being submitted
        state, native_id, message = self.jobs.status(pilot.job_id)
        if native_id and pilot.native_id is None:
            pilot.native_id = native_id
            pilot.edge = child_name(self._calls.edge_name, pool.name, native_id)
            self.store.update_pilot(pilot.job_id, native_id=native_id, edge=pilot.edge)
        if JobState(state).final:
            ended = f"pilot job {native_id} ended {state}" + (f": {message}" if message else "")
            why = (pilot.reason or "released") if pilot.state == RELEASING else ended
            self._end_pilot(pool, pilot, why)
            return
        started = state == JobState.RUNNING.value
        if pilot.edge and pilot.state == SUBMITTED and (not pilot.vouched or (started and not pilot.running_since)):
            # vouched at submission, and again when the job starts: a long queue wait never outlives the token
            token = self._calls.mint_child_token(pilot.edge, pool.spec.walltime + TOKEN_MARGIN)
            self.jobs.vouch(pilot.job_id, pilot.edge, token)
            pilot.vouched = True
        if started and pilot.state == SUBMITTED and not pilot.busy:
            pilot.running_since = pilot.running_since or now
            if now - pilot.running_since > self.config.start_timeout:
                self._spawn(self._release(pool, pilot, f"its edge did not connect within "
                                                       f"{self.config.start_timeout:g} s of the job starting"))
                return
            pilot.busy = True
            self._spawn(self._connect(pool, pilot))

    async def _connect(self, pool: Pool, pilot: Pilot) -> None:
        """Open a tasks session on the pilot's child edge (404 until it has connected)."""
        assert self.jobs is not None and pilot.edge is not None
        try:
            answer = await self._calls.call(pilot.edge, "POST", "/tasks/register_session", json={},
                                            principal=pool.owner, timeout=15)
        except EdgeCallError as exc:
            if exc.status not in (404, 503):
                log.warning("pool %s: pilot %s answered %s", pool.name, pilot.edge, exc)
            return
        finally:
            pilot.busy = False
        if pilot.state != SUBMITTED:  # it ended or was released meanwhile
            return
        pilot.sid, pilot.state = answer["sid"], READY
        self.jobs.forget_token(pilot.job_id)  # the child has it; tasks never find it on disk
        self.store.update_pilot(pilot.job_id, state=READY, sid=pilot.sid)
        log.info("pool %s: pilot %s is ready", pool.name, pilot.edge)
        self._spawn(self._follow_tasks(pool, pilot))
        self._wake.set()

    async def _release(self, pool: Pool, pilot: Pilot, why: str) -> None:
        assert self.jobs is not None
        if pilot.state in (RELEASING, ENDED):
            return
        pilot.state, pilot.reason = RELEASING, why
        pilot.handed.set()  # its follower stops
        self.store.update_pilot(pilot.job_id, state=RELEASING, reason=why)
        log.info("pool %s: releasing pilot %s: %s", pool.name, pilot.edge or pilot.job_id, why)
        try:
            await self.jobs.cancel(pilot.job_id, pilot.native_id)
        except Exception as exc:  # noqa: BLE001 - the job may be gone already; its record says so next tick
            log.warning("pool %s: cancelling pilot %s: %s", pool.name, pilot.job_id, exc)

    def _end_pilot(self, pool: Pool, pilot: Pilot, why: str) -> None:
        """The pilot's job is over: its tasks go back to the queue (or fail after ``retries``)."""
        pilot.state, pilot.reason = ENDED, why
        pilot.handed.set()  # its follower stops
        pool.pilots.pop(pilot.job_id, None)
        self.store.update_pilot(pilot.job_id, state=ENDED, reason=why, ended=time.time())
        if self.jobs is not None:
            self.jobs.clean(pilot.job_id)
        lost = list(pilot.inflight.values())
        pilot.inflight.clear()
        pilot.suspect.clear()
        if lost:
            log.warning("pool %s: pilot %s ended with %d tasks on it (%s)", pool.name, pilot.edge, len(lost), why)
        rows: list[tuple[int, dict[str, Any]]] = []
        for n in reversed(lost):
            ref = self.tasks.get(n)
            if ref is None:
                continue
            ref.attempts += 1
            if pool.cancelled:
                self._finish(ref, "CANCELLED", None, None, "the pool was cancelled", rows)
            elif ref.attempts > pool.spec.retries:
                self._finish(ref, "FAILED", None, None, f"{why}; the task ran on {ref.attempts} pilots that all "
                                                        f"ended (retries: {pool.spec.retries})", rows)
            else:
                ref.state, ref.pilot, ref.remote = "PENDING", None, None
                pool.queue.appendleft(n)
                rows.append((n, {"state": "PENDING", "pilot": None, "remote": None, "attempts": ref.attempts}))
                self._change(ref, None)
        self.store.update_tasks(rows)
        self._wake.set()

    # -- tasks on pilots -------------------------------------------------------------------------

    async def _dispatch(self, pool: Pool, pilot: Pilot, per_pilot: int) -> None:
        """Hand queued tasks to a ready pilot, up to its share."""
        try:
            while pool.queue and pilot.state == READY and len(pilot.inflight) < per_pilot:
                take: list[int] = []
                while pool.queue and len(take) < min(SEND_MAX, per_pilot - len(pilot.inflight)):
                    n = pool.queue.popleft()
                    ref = self.tasks.get(n)
                    if ref is not None and ref.state == "PENDING":
                        take.append(n)
                if not take:
                    return
                specs = await asyncio.to_thread(self.store.specs, take)
                try:
                    answer = await self._calls.call(pilot.edge or "", "POST", f"/tasks/submit_tasks/{pilot.sid}",
                                                    json={"tasks": [specs[n] for n in take]}, principal=pool.owner,
                                                    timeout=60)
                except EdgeCallError as exc:
                    if exc.status in (400, 403, 413, 422):  # its tasks plugin refused the batch (policy, shape)
                        rows: list[tuple[int, dict[str, Any]]] = []
                        for n in take:
                            self._finish(self.tasks[n], "FAILED", None, None, f"refused by the pilot: {exc.detail}",
                                         rows)
                        self.store.update_tasks(rows)
                        continue
                    pool.queue.extendleft(reversed(take))
                    log.warning("pool %s: handing tasks to %s failed: %s", pool.name, pilot.edge, exc)
                    return
                now = time.time()
                rows = []
                for n, remote in zip(take, answer["uids"], strict=True):
                    ref = self.tasks[n]
                    ref.state, ref.pilot, ref.remote = "RUNNING", pilot.job_id, remote
                    pilot.inflight[remote] = n
                    rows.append((n, {"state": "RUNNING", "pilot": pilot.job_id, "remote": remote, "started": now}))
                    self._change(ref, None)
                pilot.handed.set()
                await asyncio.to_thread(self.store.update_tasks, rows)
        finally:
            pilot.busy = False

    async def _follow_tasks(self, pool: Pool, pilot: Pilot) -> None:
        """While the pilot is ready: learn which of its tasks ended, fetch their records, record them."""
        quiet = 0.0
        while pilot.state == READY:
            if not pilot.inflight:
                pilot.handed.clear()
                try:
                    await asyncio.wait_for(pilot.handed.wait(), 5.0)
                except TimeoutError:
                    quiet += 5.0
                if quiet >= 300 and pilot.sid:  # keep the child's session from expiring while idle
                    quiet = 0.0
                    await self._ask(pool, pilot, "GET", f"/tasks/list_tasks/{pilot.sid}", params={"limit": "0"})
                continue
            quiet = 0.0
            awaited = [u for u in pilot.inflight if u not in pilot.suspect]
            if not awaited:
                await asyncio.sleep(0.2)
                continue
            answer = await self._ask(pool, pilot, "POST", f"/tasks/wait_tasks/{pilot.sid}",
                                     json={"uids": awaited, "timeout": 0.3})
            if answer is None:
                await asyncio.sleep(0.5)
                continue
            finals = [u for u, s in answer.get("states", {}).items()
                      if s in FINAL and u in pilot.inflight and u not in pilot.suspect]
            if finals:
                await self._collect(pool, pilot, finals)
            elif not answer.get("done"):
                await asyncio.sleep(0.05)

    async def _ask(self, pool: Pool, pilot: Pilot, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await self._calls.call(pilot.edge or "", method, path, principal=pool.owner, timeout=30, **kwargs)
        except EdgeCallError as exc:
            self._failed_call(pool, pilot, exc)
            return None

    def _failed_call(self, pool: Pool, pilot: Pilot, exc: EdgeCallError) -> None:
        if exc.status == 404 and "session" in str(exc.detail) and pilot.state == READY:
            self._spawn(self._release(pool, pilot, f"its tasks session is gone ({exc.detail})"))

    async def _fetch_batches(self, pool: Pool, pilot: Pilot, remotes: list[str]) -> tuple[list[tuple[str, Any]],
                                                                                          list[str]]:
        """Whole records of ``remotes`` through get_tasks, GET_TASKS_MAX a call (following its
        ``more``); also the uids left for get_task, all of them when the child has no get_tasks
        (404/405: an older child). A failed call leaves its tasks in flight: asked again next pass."""
        records: list[tuple[str, Any]] = []
        for start in range(0, len(remotes), GET_TASKS_MAX):
            ask = remotes[start:start + GET_TASKS_MAX]
            while ask:
                try:
                    answer = await self._calls.call(pilot.edge or "", "POST", f"/tasks/get_tasks/{pilot.sid}",
                                                    json={"uids": ask}, principal=pool.owner, timeout=30)
                except EdgeCallError as exc:
                    if exc.status in (404, 405) and "session" not in str(exc.detail):
                        pilot.batch_reads = False
                        log.info("pool %s: %s has no get_tasks; reading records one by one", pool.name, pilot.edge)
                        return records, ask + remotes[start + GET_TASKS_MAX:]
                    self._failed_call(pool, pilot, exc)
                    return records, []
                records.extend((t["uid"], t) for t in answer.get("tasks", []))
                # forgotten by the child (its max_tasks): the final state is known, the output is not
                records.extend((u, {"uid": u, "state": s, "exit_code": None})
                               for u, s in answer.get("forgotten", {}).items())
                if answer.get("unknown") and pilot.state == READY:  # as get_task's 404: retried elsewhere
                    self._spawn(self._release(pool, pilot, f"its tasks session lost tasks {answer['unknown'][:3]}"))
                ask = answer.get("more") or []
        return records, []

    async def _collect(self, pool: Pool, pilot: Pilot, remotes: list[str],
                       known: dict[str, Any] | None = None) -> None:
        """Record finished tasks: their whole records (output too; get_tasks, a thousand a call),
        or with ``collect_output: false`` only states and exit codes, all in one call."""
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def fetch(remote: str) -> tuple[str, Any]:
            async with gate:
                return remote, await self._ask(pool, pilot, "GET", f"/tasks/get_task/{pilot.sid}/{remote}")

        if known is not None:
            records: list[tuple[str, Any]] = list(known.items())
        elif self.config.collect_output:
            records, one_by_one = (await self._fetch_batches(pool, pilot, remotes) if pilot.batch_reads
                                   else ([], remotes))
            records += await asyncio.gather(*(fetch(r) for r in one_by_one))
        else:
            answer = await self._ask(pool, pilot, "POST", f"/tasks/task_states/{pilot.sid}", json={"uids": remotes})
            records = [(t["uid"], t) for t in (answer or {}).get("tasks", [])]
        rows: list[tuple[int, dict[str, Any]]] = []
        for remote, record in records:
            n = pilot.inflight.get(remote)
            if record is None or n is None:
                continue
            if _killed(record) and remote not in pilot.suspect:
                pilot.suspect[remote] = record  # believed only if the pilot outlives it (_confirm)
                self._spawn(self._confirm(pool, pilot, remote))
                continue
            pilot.suspect.pop(remote, None)
            del pilot.inflight[remote]
            ref = self.tasks.get(n)
            if ref is None:
                continue
            result = {k: record.get(k) for k in ("stdout", "stderr", "return_value", "exception") if k in record}
            self._finish(ref, record["state"], record.get("exit_code"), result, None, rows)
        if rows:
            await asyncio.to_thread(self.store.update_tasks, rows)
            self._wake.set()

    async def _confirm(self, pool: Pool, pilot: Pilot, remote: str) -> None:
        """A task that looks killed (a signal, a lost worker) counts as FAILED only if its pilot
        is still alive a moment later; if the pilot is dying, ``_end_pilot`` retries the task."""
        assert self.jobs is not None
        await asyncio.sleep(SUSPECT_WAIT)
        record = pilot.suspect.get(remote)
        if record is None or pilot.state != READY or JobState(self.jobs.status(pilot.job_id)[0]).final:
            return
        await self._collect(pool, pilot, [remote], {remote: record})

    def _finish(self, ref: TaskRef, state: str, exit_code: int | None, result: dict[str, Any] | None,
                reason: str | None, rows: list[tuple[int, dict[str, Any]]]) -> None:
        ref.state = state
        self.tasks.pop(ref.n, None)
        self.unfinished_by_owner[ref.owner] -= 1
        if self.unfinished_by_owner[ref.owner] <= 0:
            del self.unfinished_by_owner[ref.owner]
        rows.append((ref.n, {"state": state, "exit_code": exit_code, "reason": reason, "finished": time.time(),
                             "attempts": ref.attempts,
                             "result": orjson.dumps(result, default=str).decode() if result is not None else None}))
        self._change(ref, exit_code)
        self._finals.set()
        self._finals = asyncio.Event()

    def _change(self, ref: TaskRef, exit_code: int | None) -> None:
        self._changes.setdefault((ref.owner, ref.sid), []).append(
            {"uid": uid_of(ref.n), "state": ref.state, "exit_code": exit_code, "pool": ref.pool})

    def _flush_events(self) -> None:
        changes, self._changes = self._changes, {}
        for (owner, sid), entries in changes.items():
            who = None if owner == "local" else Principal(owner, Role.user, owner)
            for start in range(0, len(entries), 1000):
                self.notify("task_status_batch", {"sid": sid, "tasks": entries[start:start + 1000]}, owner=who)
        for pool in self.pools.values():  # a pool's summary, when it changed: O(pilots) per pass
            summary = pool.public()
            seen = (summary["state"], summary["queued"], summary["running"],
                    tuple((p["job_id"], p["state"], p["edge"], p["running"]) for p in summary["pilots"]))
            if self._pool_seen.get(pool.name) != (pool.owner, seen):
                self._pool_seen[pool.name] = (pool.owner, seen)
                self.notify("pool_status", summary, owner=pool.owner)
        for name in [n for n in self._pool_seen if n not in self.pools]:  # removed: say so, once
            gone_owner, _ = self._pool_seen.pop(name)
            self.notify("pool_status", {"name": name, "owner": gone_owner.name, "state": "GONE", "queued": 0,
                                        "running": 0, "pilots": []}, owner=gone_owner)

    # -- routes: pools ---------------------------------------------------------------------------

    def _caller(self) -> Principal:
        return current_principal.get() or _local()

    def pool_for(self, name: str) -> Pool:
        pool = self.pools.get(name)
        who = current_principal.get()
        if pool is None or not (who is None or who.owns(pool.owner.id)):
            raise PluginError(f"no pool {name!r}; create it with create_pool", 404)
        return pool

    async def create_pool(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        self.require_role(Role.user)
        body = await request.json()
        try:
            spec = PoolSpec.model_validate(body)
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(spec)", "problem": e["msg"]}
                      for e in exc.errors()]
            raise PluginError({"message": f"the pool spec has {len(errors)} problem(s)", "errors": errors},
                              422) from exc
        return await self.create(spec)

    async def create(self, spec: PoolSpec) -> dict[str, Any]:
        """Create pool ``spec`` for the caller (also what the lucid plugin calls)."""
        cfg: PilotsConfig = self.config
        calls = self._calls
        if spec.max_size > cfg.max_pool_size:
            raise PluginError({"message": "the pool spec has 1 problem(s)", "errors": [
                {"field": "max_size", "problem": f"at most {cfg.max_pool_size} pilots (max_pool_size)"}]}, 422)
        if len(child_name(calls.edge_name, spec.name, "1" * 10)) > 63:
            raise PluginError({"message": "the pool spec has 1 problem(s)", "errors": [
                {"field": "name", "problem": "too long: child edges are <edge>.<pool>.<jobid>, at most 63 "
                                            "characters"}]}, 422)
        if spec.dask is not None and importlib.util.find_spec("distributed") is None:
            raise PluginError({"message": "the pool spec has 1 problem(s)", "errors": [
                {"field": "dask", "problem": "this edge has no Dask: pip install 'isthmus[dask]'"}]}, 422)
        existing = self.pools.get(spec.name)
        if existing is not None:
            raise PluginError(f"pool {spec.name!r} exists{' (cancelling)' if existing.cancelled else ''}; "
                              "cancel it or pick another name", 409)
        if sum(1 for p in self.pools.values() if not p.cancelled) >= cfg.max_pools:
            raise PluginError(f"this edge has {cfg.max_pools} pools (max_pools); cancel one first", 429)
        assert self.jobs is not None
        await self.jobs.check_partition(spec)
        owner = self._caller()
        pool = Pool(spec, owner, created=time.time())
        await asyncio.to_thread(self.store.put_pool, spec.name, owner.to_wire(), spec.model_dump())
        self.pools[spec.name] = pool
        self._wake.set()
        return pool.public()

    async def list_pools(self, request: Request) -> dict[str, Any]:
        who = current_principal.get()
        return {"pools": [p.public() for p in self.pools.values() if who is None or who.owns(p.owner.id)]}

    async def get_pool(self, request: Request) -> dict[str, Any]:
        pool = self.pool_for(request.path_params["name"])
        return {**pool.public(), "counts": await asyncio.to_thread(self.store.counts, pool.name)}

    async def cancel_pool(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        self.require_role(Role.user)
        return await self.cancel(request.path_params["name"])

    async def cancel(self, name: str) -> dict[str, Any]:
        """Cancel pool ``name``: its pilots' batch jobs, its queued and running tasks."""
        pool = self.pool_for(name)
        pool.cancelled = True
        await asyncio.to_thread(self.store.set_pool_state, name, "CANCELLED")
        rows: list[tuple[int, dict[str, Any]]] = []
        for n in pool.queue:
            ref = self.tasks.get(n)
            if ref is not None and ref.state == "PENDING":
                self._finish(ref, "CANCELLED", None, None, "the pool was cancelled", rows)
        pool.queue.clear()
        for pilot in list(pool.pilots.values()):
            await self._release(pool, pilot, "the pool was cancelled")
        await asyncio.to_thread(self.store.update_tasks, rows)
        self._wake.set()
        return {"name": name, "state": "CANCELLED", "pilots": [p.public() for p in pool.pilots.values()]}

    # -- routes: tasks (the tasks plugin's names) -------------------------------------------------

    def _session(self, request: Request) -> PilotsSession:
        session = self._get_session(request.path_params["sid"])
        assert isinstance(session, PilotsSession)
        return session

    async def submit_tasks(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        self.require_role(Role.user)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        try:
            specs = expand(body) if isinstance(body, dict) and "items" in body else (
                body.get("tasks") if isinstance(body, dict) else None)
        except ValueError as exc:
            raise PluginError(str(exc), 422) from exc
        if not isinstance(specs, list):
            raise PluginError("send {\"template\": {...}, \"items\": [...]} or {\"tasks\": [...]}", 422)
        name = request.query_params.get("pool") or session.pool
        if not name:
            raise PluginError("name the pool: submit_tasks/{sid}?pool=NAME, or register_session(pool=NAME)", 422)
        return {"uids": await self.submit(name, session.sid, specs)}

    async def submit(self, name: str, sid: str, specs: list[Any]) -> list[str]:
        """Queue ``specs`` in pool ``name`` for the caller; their uids."""
        pool = self.pool_for(name)
        if pool.cancelled:
            raise PluginError(f"pool {name!r} is cancelled", 409)
        cfg: PilotsConfig = self.config
        if not specs:
            raise PluginError("no tasks given", 422)
        if len(specs) > cfg.max_batch:
            raise PluginError(f"{len(specs)} tasks in one batch; at most {cfg.max_batch}", 413)
        if len(self.tasks) + len(specs) > cfg.max_queued:
            raise PluginError(f"this edge holds {len(self.tasks)} unfinished pool tasks (max_queued "
                              f"{cfg.max_queued}); wait for some to finish", 429)
        bad = [i for i, s in enumerate(specs) if not isinstance(s, dict)
               or not isinstance(s.get("executable", s.get("function")), str)]
        if bad:
            raise PluginError({"message": f"{len(bad)} task(s) name no executable or function",
                               "errors": [{"field": f"tasks[{i}]", "problem": "needs executable or function"}
                                          for i in bad[:20]]}, 422)
        await asyncio.to_thread(self._check_executables, specs)
        owner = self._caller().id
        numbers = await asyncio.to_thread(self.store.add_tasks, name, owner, sid, specs)
        for n in numbers:
            ref = TaskRef(n, name, owner, sid)
            self.tasks[n] = ref
            self._change(ref, None)
        self.unfinished_by_owner[owner] += len(numbers)
        pool.queue.extend(numbers)
        self._wake.set()
        return [uid_of(n) for n in numbers]

    def _check_executables(self, specs: list[dict[str, Any]]) -> None:
        """The pilots' policy, checked here first (once per distinct executable): a refused task is a
        403 now, not a batch its pilot refuses later."""
        cfg: PilotsConfig = self.config
        seen: set[str] = set()
        for spec in specs:
            exe = spec.get("executable")
            if isinstance(exe, str) and exe not in seen:
                seen.add(exe)
                resolve_executable(exe, cfg.allowed_executables, cfg.allow_any_executable)

    def _numbers(self, uids: list[Any]) -> tuple[list[int], list[str]]:
        numbers, unknown = [], []
        for uid in uids:
            n = number_of(uid) if isinstance(uid, str) else None
            if n is None:
                unknown.append(str(uid))
            else:
                numbers.append(n)
        return numbers, unknown

    async def _states(self, uids: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """The caller's tasks among ``uids`` as {uid, state, exit_code}; the others are unknown."""
        numbers, unknown = self._numbers(uids)
        who = current_principal.get()
        found = await asyncio.to_thread(self.store.states, numbers)
        briefs = []
        for n in numbers:
            rec = found.get(n)
            if rec is None or not (who is None or who.owns(rec[2])):
                unknown.append(uid_of(n))
                continue
            ref = self.tasks.get(n)
            briefs.append({"uid": uid_of(n), "state": ref.state if ref is not None else rec[0], "exit_code": rec[1]})
        return briefs, unknown

    async def _uids(self, request: Request) -> tuple[dict[str, Any], list[Any] | None]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        uids = body.get("uids") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not (uids is None or isinstance(uids, list)):
            raise PluginError("send {\"uids\": [\"pt.000000001\", ...]}", 422)
        if uids is not None and len(uids) > 100_000:
            raise PluginError("at most 100,000 uids per call", 413)
        return body, uids

    async def task_states(self, request: Request) -> dict[str, Any]:
        self._session(request)
        _, uids = await self._uids(request)
        found, unknown = await self._states(uids or [])
        return {"tasks": found, "unknown": unknown}

    async def wait_tasks(self, request: Request) -> dict[str, Any]:
        """Until the uids (none given: every task of the caller) are final, or ``timeout`` (≤ 50 s)."""
        self._session(request)
        body, uids = await self._uids(request)
        try:
            timeout = min(max(float(body.get("timeout", 30.0)), 0.0), 50.0)
        except (TypeError, ValueError) as exc:
            raise PluginError("timeout must be seconds", 422) from exc
        deadline = time.monotonic() + timeout
        owner = self._caller().id
        numbers, _ = self._numbers(uids or [])
        while True:
            finals = self._finals
            if uids is None:
                done = self.unfinished_by_owner.get(owner, 0) == 0
            else:
                done = not any(n in self.tasks for n in numbers)
            left = deadline - time.monotonic()
            if done or left <= 0:
                break
            try:
                await asyncio.wait_for(finals.wait(), left)
            except TimeoutError:
                break
        if uids is None:
            return {"done": done, "unfinished": self.unfinished_by_owner.get(owner, 0)}
        found, unknown = await self._states(uids)
        return {"done": done and not unknown, "unknown": unknown,
                "states": {t["uid"]: t["state"] for t in found if t["state"] in FINAL}}

    async def list_tasks(self, request: Request) -> dict[str, Any]:
        """One page in uid order: ``?pool=&state=&limit=&after=``; ``next`` is the cursor or null."""
        session = self._session(request)
        query = request.query_params
        try:
            limit = int(query.get("limit") or 1000)
        except ValueError as exc:
            raise PluginError("limit must be a whole number", 422) from exc
        if not 0 <= limit <= PAGE_MAX:
            raise PluginError(f"limit must be between 0 and {PAGE_MAX}", 422)
        after_uid = query.get("after")
        after = number_of(after_uid) if after_uid else 0
        if after is None:
            raise PluginError("after must be a task uid such as pt.000000001", 422)
        state = query.get("state") or None
        if state is not None and state not in ("PENDING", "RUNNING", *FINAL):
            raise PluginError("state must be one of PENDING, RUNNING, DONE, FAILED, CANCELLED", 422)
        who = current_principal.get()
        owner = None if who is None or who.is_admin else who.id
        pool = query.get("pool") or session.pool
        rows = await asyncio.to_thread(self.store.page, owner, pool, state, after, limit + 1) if limit else []
        more = len(rows) > limit
        rows = rows[:limit]
        counts = await asyncio.to_thread(self.store.counts, pool, owner) if pool else {}
        return {"tasks": [{"uid": uid_of(n), "state": s, "exit_code": c} for n, s, c in rows], "counts": counts,
                "forgotten": 0, "next": uid_of(rows[-1][0]) if more else None}

    async def get_task(self, request: Request) -> dict[str, Any]:
        self._session(request)
        return await self.record(request.path_params["uid"])

    async def wait_record(self, uid: str, timeout: float) -> dict[str, Any]:
        """The caller's task ``uid`` once final, or as it is after ``timeout`` seconds (lucid's task_wait)."""
        n = number_of(uid)
        deadline = time.monotonic() + timeout
        while n is not None and n in self.tasks:
            finals = self._finals
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(finals.wait(), left)
            except TimeoutError:
                break
        return await self.record(uid)

    async def record(self, uid: str) -> dict[str, Any]:
        """The caller's task ``uid``: state, pilot, attempts, output (404 when not the caller's)."""
        n = number_of(uid)
        rec = await asyncio.to_thread(self.store.task, n) if n is not None else None
        who = current_principal.get()
        if rec is None or not (who is None or who.owns(rec["owner"])):
            raise PluginError(f"no task {uid}", 404)
        result = orjson.loads(rec["result"]) if rec["result"] else {}
        pilot = await asyncio.to_thread(self.store.pilot, rec["pilot"]) if rec["pilot"] else None
        return {"uid": uid, "state": rec["state"], "exit_code": rec["exit_code"], "spec": orjson.loads(rec["spec"]),
                "pool": rec["pool"], "pilot": pilot["edge"] if pilot else None, "attempts": rec["attempts"],
                "reason": rec["reason"], "submitted": rec["submitted"], "started": rec["started"],
                "finished": rec["finished"], "stdout": result.get("stdout", ""), "stderr": result.get("stderr", ""),
                "return_value": result.get("return_value"), "exception": result.get("exception") or rec["reason"]}

    async def cancel_task(self, request: Request) -> dict[str, Any]:
        self._session(request)
        return {"cancelled": await self._cancel_tasks([request.path_params["uid"]])}

    async def cancel_all_tasks(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        owner = self._caller().id
        mine = [uid_of(r.n) for r in self.tasks.values() if r.owner == owner and r.sid == session.sid]
        return {"cancelled": await self._cancel_tasks(mine)}

    async def _cancel_tasks(self, uids: list[str]) -> int:
        numbers, _ = self._numbers(uids)
        who = current_principal.get()
        rows: list[tuple[int, dict[str, Any]]] = []
        count = 0
        for n in numbers:
            ref = self.tasks.get(n)
            if ref is None or not (who is None or who.owns(ref.owner)):
                continue
            count += 1
            if ref.state == "PENDING":
                self._finish(ref, "CANCELLED", None, None, "cancelled before it ran", rows)
                continue
            pool = self.pools.get(ref.pool)
            pilot = pool.pilots.get(ref.pilot) if pool is not None and ref.pilot else None
            if pool is not None and pilot is not None and pilot.sid and ref.remote:
                await self._ask(pool, pilot, "POST", f"/tasks/cancel_task/{pilot.sid}/{ref.remote}")
        await asyncio.to_thread(self.store.update_tasks, rows)
        return count


def _local() -> Principal:
    return Principal("local", Role.admin, "local")


def _killed(record: dict[str, Any]) -> bool:
    """A FAILED result that may be its pilot dying (a signal, or no exit code at all)."""
    code = record.get("exit_code")
    return record.get("state") == "FAILED" and (code is None or code < 0 or code in (137, 143))
