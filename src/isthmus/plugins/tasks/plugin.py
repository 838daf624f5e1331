"""tasks: many small executables or Python functions, run in chunks, reported in batches.

Throughput comes from the shape: one HTTP call per batch (compacted on the wire), tasks
run in chunks inside pool workers (one round trip per chunk, not per task), and state
changes are coalesced into ``task_status_batch`` events (at most every ~50 ms or 1000
changes), so thousands of completions cost a handful of events.

No per-call cost grows with the session's history: tasks are found by uid (a dict), each
state keeps its task numbers in a :class:`~.index.NumberSet` (counts in O(1), pages in
uid order in O(page)), waiting follows only the tasks asked about, and forgetting finished
tasks beyond ``max_tasks`` pops the oldest from ordered dicts. Finished tasks whose record
was read (``get_task``) are forgotten first; a forgotten task's final state stays known (one
byte per task number), so waiting for it still answers.

Executables pass the same policy as psij jobs (:mod:`isthmus.plugins.jobpolicy`): an
allow-list of resolved paths, a clean environment, no loader variables unless the admin
allows them. A session may only name a Dask scheduler the admin listed (``dask_addresses``):
otherwise any user could make the edge dial any host and port.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import itertools
import math
import shutil
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.responses import Response

from ...errors import PluginError
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin, json_bytes
from ...sdk.session import PluginSession
from ...types import Role, current_principal
from ..jobpolicy import check_environment, check_number, check_text, resolve_executable
from .backends import Backend
from .backends.local import LocalBackend
from .config import TasksConfig
from .index import NumberSet, merged_page, number_of, uid_of
from .states import FINAL, TaskState, advance
from .wire import GET_TASKS_MAX, expand

COALESCE_SECONDS = 0.05
COALESCE_MAX = 1000
MAX_CHUNK_FUNCTIONS = 512
MAX_CHUNK_EXECUTABLES = 64
MAX_TIMEOUT = 366 * 86400  # seconds; larger (or inf/nan) is a mistake, and overflows timers
INTERNAL_KEYS = frozenset({"uid", "cancel_marker", "passthrough"})  # set by the edge, never by a client
PAGE_DEFAULT = 1000  # list_tasks without limit: one page of this many, never the whole session
PAGE_MAX = 10_000
GET_TASKS_BYTES = 16 << 20  # a get_tasks answer stops adding records past this many bytes (stdout, stderr, values)
FORGOTTEN_CODES = (None, TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)  # bytes of session.forgotten


@dataclass(slots=True)
class Task:
    uid: str
    spec: dict[str, Any]
    number: int = 0  # the uid's number: its place in the per-state indexes
    state: TaskState = TaskState.PENDING
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    return_value: Any = None
    exception: str | None = None
    cancel_requested: bool = False

    def brief(self) -> dict[str, Any]:
        return {"uid": self.uid, "state": self.state.value, "exit_code": self.exit_code}

    def full(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.spec.items() if k not in INTERNAL_KEYS}
        if spec.get("pickled"):
            spec["function"] = "<pickled function>"
        return {**self.brief(), "spec": spec, "submitted": self.submitted, "started": self.started,
                "finished": self.finished, "stdout": self.stdout, "stderr": self.stderr,
                "return_value": self.return_value, "exception": self.exception}


class TasksSession(PluginSession):
    """One client's tasks, its backend, its dispatcher and its event coalescer."""

    def __init__(self, sid: str, backend: str | None = None, address: str | None = None, **_: Any) -> None:
        super().__init__(sid)
        self.backend_name = backend
        self.address = address
        self.backend: Backend | None = None
        self.owns_backend = False
        self.plugin: PluginTasks | None = None
        self.tasks: dict[str, Task] = {}  # every kept task, by uid
        self.by_state = {state: NumberSet() for state in TaskState}  # task numbers per state
        self.unread: OrderedDict[str, None] = OrderedDict()  # finished, record not read: oldest finished first
        self.read: OrderedDict[str, None] = OrderedDict()  # finished, record read (get_task): forgotten first
        self.forgotten = bytearray()  # by task number: the final state of a forgotten task (FORGOTTEN_CODES)
        self.forgotten_count = 0
        self.pending: deque[str] = deque()
        self.inflight = 0
        self.counter = itertools.count(1)
        self.changes: list[dict[str, Any]] = []
        self.flush_handle: asyncio.TimerHandle | None = None
        self.final_event = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()

    async def initialize(self) -> None:
        """Pick and start the backend (called by register_session before the session is stored)."""
        plugin = self.plugin
        assert plugin is not None
        name = self.backend_name or plugin.config.backend
        try:
            if name == "local":
                self.backend = plugin.local
                return
            if name == "dask":
                from .backends.dask import DaskBackend

                address = plugin.dask_address(self.address) if self.address else plugin.config.dask_address
                self.backend = DaskBackend(address, plugin.config.dask_jobqueue, plugin.config.dask_tls)
            elif name == "rhapsody":
                from .backends.rhapsody import RhapsodyBackend

                self.backend = RhapsodyBackend(plugin.config.rhapsody_backend, plugin.config.workers)
            else:
                raise ValueError(f"unknown backend {name!r}; expected local, dask or rhapsody")
            self.owns_backend = True
            await self.backend.start()
        except (ValueError, OSError, ImportError) as exc:
            raise PluginError(f"backend {name}: {exc}", 422) from exc

    # -- events ---------------------------------------------------------------------------------

    def _changed(self, task: Task) -> None:
        self.changes.append(task.brief())
        if len(self.changes) >= COALESCE_MAX:
            self._flush()
        elif self.flush_handle is None:
            self.flush_handle = asyncio.get_running_loop().call_later(COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        changes, self.changes = self.changes, []
        if not changes or self._notify is None:
            return
        if len(changes) == 1:
            self._notify("task_status", {**changes[0], "sid": self.sid})
        else:
            self._notify("task_status_batch", {"sid": self.sid, "tasks": changes})

    def _move(self, task: Task, event: TaskState) -> bool:
        new = advance(task.state, event, task.cancel_requested)
        if new is None:
            return False
        self.by_state[task.state].discard(task.number)
        self.by_state[new].add(task.number)
        task.state = new
        now = time.time()
        if new is TaskState.RUNNING:
            task.started = now
        elif new.final:
            task.finished = now
            self.unread[task.uid] = None
            self.final_event.set()
        self._changed(task)
        return True

    # -- dispatch -------------------------------------------------------------------------------

    def _chunk(self) -> list[Task]:
        assert self.backend is not None
        parallel = self.backend.parallelism()
        if not self.pending:
            return []
        first = self.tasks.get(self.pending[0])
        limit = MAX_CHUNK_FUNCTIONS if first is not None and "function" in first.spec else MAX_CHUNK_EXECUTABLES
        size = max(1, min(limit, math.ceil(len(self.pending) / parallel)))
        chunk: list[Task] = []
        while self.pending and len(chunk) < size:
            task = self.tasks.get(self.pending.popleft())
            if task is not None and task.state is TaskState.PENDING:
                chunk.append(task)
        return chunk

    def dispatch(self) -> None:
        assert self.backend is not None
        while self.pending and self.inflight < self.backend.parallelism():
            chunk = self._chunk()
            if not chunk:
                break
            for task in chunk:
                self._move(task, TaskState.RUNNING)
            self.inflight += 1
            job = asyncio.create_task(self._run(chunk))
            self.running.add(job)
            job.add_done_callback(self.running.discard)

    async def _run(self, chunk: list[Task]) -> None:
        assert self.backend is not None and self.plugin is not None
        tail = self.plugin.config.output_tail
        try:
            results = await self.backend.run_chunk([t.spec for t in chunk], tail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend failure fails its tasks, never the session
            results = [{"state": "FAILED", "exception": f"backend {self.backend.name} failed: "
                                                         f"{type(exc).__name__}: {exc}"}] * len(chunk)
        finally:
            self.inflight -= 1
        for task, result in zip(chunk, results, strict=False):
            task.exit_code = result.get("exit_code")
            task.stdout = result.get("stdout", "")
            task.stderr = result.get("stderr", "")
            task.return_value = result.get("return_value")
            task.exception = result.get("exception")
            self._move(task, TaskState(result["state"]))
        self._trim()
        if self._active:
            self.dispatch()
        if not self.pending and self.inflight == 0:
            self._flush()  # the batch is complete: say so now, not after the coalescing window

    def _trim(self) -> None:
        """Forget finished tasks beyond ``max_tasks``: read ones first, then the oldest unread; O(forgotten)."""
        assert self.plugin is not None
        excess = len(self.read) + len(self.unread) - self.plugin.config.max_tasks
        for _ in range(max(excess, 0)):
            uid, _none = (self.read if self.read else self.unread).popitem(last=False)
            task = self.tasks.pop(uid)
            self.by_state[task.state].discard(task.number)
            if len(self.forgotten) <= task.number:
                self.forgotten.extend(bytes(task.number + 1 - len(self.forgotten)))
            self.forgotten[task.number] = FORGOTTEN_CODES.index(task.state)
            self.forgotten_count += 1

    # -- lookups: each costs what it is asked about ---------------------------------------------------

    def forgotten_state(self, uid: str) -> TaskState | None:
        """The final state of a task this session forgot (``max_tasks``), or None."""
        number = number_of(uid)
        if number is None or number >= len(self.forgotten):
            return None
        return FORGOTTEN_CODES[self.forgotten[number]]

    def mark_read(self, task: Task) -> None:
        """A finished task's record was read: it is among the first to go beyond ``max_tasks``."""
        if task.uid in self.unread:
            del self.unread[task.uid]
            self.read[task.uid] = None

    def unfinished(self) -> int:
        return len(self.by_state[TaskState.PENDING]) + len(self.by_state[TaskState.RUNNING])

    def unfinished_uids(self) -> list[str]:
        return [uid_of(n) for state in (TaskState.PENDING, TaskState.RUNNING)
                for n in self.by_state[state].snapshot()]

    def counts(self) -> dict[str, int]:
        return {state.value: len(self.by_state[state]) for state in TaskState}

    def page(self, state: TaskState | None, after: int, limit: int) -> list[Task]:
        """Up to ``limit`` tasks (of ``state``, or any) with uid numbers above ``after``, in uid order."""
        sets = [self.by_state[state]] if state is not None else list(self.by_state.values())
        return [self.tasks[uid_of(n)] for n in merged_page(sets, after, limit)]

    def states(self, uids: Iterable[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Brief records of ``uids`` (forgotten ones too) and the uids this session never had."""
        found: list[dict[str, Any]] = []
        unknown: list[str] = []
        for uid in uids:
            task = self.tasks.get(uid)
            if task is not None:
                found.append(task.brief())
                continue
            gone = self.forgotten_state(uid)
            if gone is None:
                unknown.append(uid)
            else:
                found.append({"uid": uid, "state": gone.value, "exit_code": None, "forgotten": True})
        return found, unknown

    # -- API ------------------------------------------------------------------------------------

    def submit(self, specs: list[dict[str, Any]]) -> list[str]:
        self._check_active()
        assert self.plugin is not None
        passthrough = tuple(self.plugin.config.env_passthrough)  # one object: pickled once per chunk
        uids = []
        pending = self.by_state[TaskState.PENDING]
        for spec in specs:
            number = next(self.counter)
            uid = uid_of(number)
            if "executable" in spec:
                key = f"{self.sid}.{uid}"  # unique across sessions: uids are per session
                spec = {**spec, "uid": key, "cancel_marker": str(self.plugin.cancel_dir / key),
                        "passthrough": passthrough}
            self.tasks[uid] = Task(uid, spec, number)
            pending.add(number)
            self.pending.append(uid)
            uids.append(uid)
        self.dispatch()
        return uids

    async def cancel(self, uids: list[str]) -> int:
        running: set[str] = set()
        count = 0
        for uid in uids:
            task = self.tasks.get(uid)
            if task is None or task.state.final:
                continue
            count += 1
            if task.state is TaskState.PENDING:
                self._move(task, TaskState.CANCELLED)
            else:
                task.cancel_requested = True
                running.add(uid)
        keys = {f"{self.sid}.{uid}" for uid in running}
        if keys and self.plugin is not None:
            await asyncio.to_thread(self.plugin.mark_cancelled, keys)
        if keys and self.backend is not None:
            await self.backend.kill(keys)
        if count and self.plugin is not None:
            self._trim()
        return count

    async def wait(self, uids: list[str] | None, timeout: float) -> bool:
        """Until ``uids`` (None: every task) are final or ``timeout``; each wake-up costs the tasks still awaited."""
        deadline = time.monotonic() + timeout
        targets = None if uids is None else [t for u in uids if (t := self.tasks.get(u)) is not None]
        while True:
            if targets is None:
                if self.unfinished() == 0:
                    return True
            else:
                targets = [t for t in targets if not t.state.final]
                if not targets:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.final_event.clear()
            try:
                await asyncio.wait_for(self.final_event.wait(), left)
            except TimeoutError:
                return False

    async def close(self) -> dict[str, Any]:
        await self.cancel(self.unfinished_uids())
        for job in list(self.running):
            job.cancel()
        self._flush()
        if self.owns_backend and self.backend is not None:
            await self.backend.close()
        return await super().close()


class PluginTasks(Plugin):
    plugin_name = "tasks"
    title = "Tasks"
    description = "Run many small executables or Python functions near the data, on a local pool or Dask."
    version = "0.1.0"
    session_class = TasksSession
    config_model = TasksConfig
    ui_config = {
        "icon": "⚙",
        "title": "Tasks",
        "description": "High-throughput tasks: executables or Python functions, with live state.",
        "forms": [{"id": "submit", "title": "Run an executable", "fields": [
            {"name": "executable", "type": "text", "default": "/bin/echo", "required": True},
            {"name": "arguments", "type": "list", "default": ["hello"]},
            {"name": "count", "type": "integer", "default": 1, "min": 1, "max": 10000}],
            "submit": {"label": "Run", "style": "success", "endpoint": "submit_form/{sid}"}}],
        "monitors": [{"id": "tasks", "title": "Tasks", "type": "task_list", "endpoint": "list_tasks/{sid}"}],
        "notifications": {"topic": "task_status", "id_field": "uid", "state_field": "state"},
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.local = LocalBackend(self.config.workers)
        # a running chunk checks here before each executable: cancel reaches tasks not started yet
        self.cancel_dir = Path(tempfile.mkdtemp(prefix="isthmus-tasks-cancel-"))
        for path, handler in (("submit_tasks/{sid}", self.submit_tasks), ("submit_form/{sid}", self.submit_form),
                              ("cancel_task/{sid}/{uid}", self.cancel_task),
                              ("cancel_all_tasks/{sid}", self.cancel_all)):
            self.add_route_post(path, handler)
        self.add_route_post("wait_tasks/{sid}", self.wait_tasks, reads=True)
        self.add_route_post("task_states/{sid}", self.task_states, reads=True)
        self.add_route_post("get_tasks/{sid}", self.get_tasks, reads=True)
        self.add_route_get("list_tasks/{sid}", self.list_tasks)
        self.add_route_get("get_task/{sid}/{uid}", self.get_task)
        self.add_route_get("task_counts", self.task_counts)
        self.add_route_get("backends", self.backends)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="workload", label="Workload", icon="layers", order=50,
                            items=[MenuItem(id="tasks", label="Tasks", path="/tasks", icon="cpu")])]

    async def on_startup(self) -> None:
        await self.local.start()

    async def on_shutdown(self) -> None:
        await self.local.close()
        shutil.rmtree(self.cancel_dir, ignore_errors=True)

    def collect_metrics(self) -> Iterator[Metric]:
        """Tasks kept by open sessions, by state: O(sessions x states), from the per-state indexes."""
        totals = dict.fromkeys(TaskState, 0)
        for session in list(self._sessions.values()):
            if isinstance(session, TasksSession):
                for state, numbers in session.by_state.items():
                    totals[state] += len(numbers)
        tasks = GaugeMetricFamily("isthmus_edge_tasks", "Tasks kept by open sessions, by state.", labels=["state"])
        for state, count in totals.items():
            tasks.add_metric([state.value], count)
        yield tasks

    def mark_cancelled(self, keys: set[str]) -> None:
        for key in keys:
            (self.cancel_dir / key).touch()

    # -- sessions pick a backend ------------------------------------------------------------------

    def dask_address(self, address: Any) -> str:
        """``address`` if the admin lists it (``dask_addresses`` or ``dask_address``); else 403.

        Checked before any connection is tried: a refused address tells nothing about
        whether something listens there.
        """
        def norm(value: str) -> str:
            value = value.strip()
            return value if "://" in value else f"tcp://{value}"

        if not isinstance(address, str) or not address.strip():
            raise PluginError("address must be a Dask scheduler address such as tcp://host:8786", 422)
        allowed = [*self.config.dask_addresses, *([self.config.dask_address] if self.config.dask_address else [])]
        if norm(address) not in {norm(a) for a in allowed}:
            raise PluginError(f"Dask scheduler {address!r} is not one this edge may use; an admin lists allowed "
                              f"schedulers in the tasks plugin's config key dask_addresses "
                              f"(now: {', '.join(allowed) or 'none'})", 403)
        return address.strip()

    def _create_session(self, sid: str, **kwargs: Any) -> PluginSession:
        unknown = set(kwargs) - {"backend", "address"}
        if unknown:
            raise PluginError(f"register_session takes backend and address, not {', '.join(sorted(unknown))}", 422)
        session = TasksSession(sid, **kwargs)
        session.plugin = self
        return session

    # -- validation -----------------------------------------------------------------------------

    def _validate(self, specs: list[Any]) -> list[dict[str, Any]]:
        if not specs:
            raise PluginError("no tasks given", 422)
        if len(specs) > self.config.max_batch:
            raise PluginError(f"{len(specs)} tasks in one batch; at most {self.config.max_batch} (the client splits "
                              "larger batches)", 413)
        problems: list[str] = []
        functions = False
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict):
                problems.append(f"task {i}: not an object")
                continue
            if ("executable" in spec) == ("function" in spec):
                problems.append(f"task {i}: give exactly one of executable or function")
                continue
            reserved = sorted(INTERNAL_KEYS & spec.keys())
            if reserved:
                problems.append(f"task {i}: {', '.join(reserved)} are set by the edge, not by clients")
            if "function" in spec:
                functions = True
                problems += self._function_problems(i, spec)
            else:
                problems += self._executable_problems(i, spec)
            timeout = spec.get("timeout")
            if timeout is not None:
                try:
                    check_number(timeout, "timeout", MAX_TIMEOUT)
                except ValueError as exc:
                    problems.append(f"task {i}: {exc} (seconds)")
            if len(problems) >= 20:
                break
        if problems:
            raise PluginError({"message": f"{len(problems)} problem(s) in the batch", "errors": problems}, 422)
        if functions:
            self.require_role(Role.user)
        return self._resolve_executables(specs)

    def _executable_problems(self, i: int, spec: dict[str, Any]) -> list[str]:
        """Shape and text of an executable task; its environment against the loader-variable policy."""
        exe = spec["executable"]
        if not isinstance(exe, str) or not exe:
            return [f"task {i}: executable must be a non-empty string"]
        problems = []
        args = spec.get("arguments", [])
        if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool)
                                                 for a in args):
            problems.append(f"task {i}: arguments must be a list of strings")
        elif any("\x00" in str(a) for a in args):
            problems.append(f"task {i}: arguments cannot contain NUL characters")
        directory = spec.get("directory")
        if directory is not None and (not isinstance(directory, str) or "\x00" in directory):
            problems.append(f"task {i}: directory must be a path")
        try:
            check_text(exe, "executable")
            check_environment(spec.get("environment"), self.config.allowed_loader_variables)
        except ValueError as exc:
            problems.append(f"task {i}: {exc}")
        return problems

    def _resolve_executables(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Executables resolved and checked against ``allowed_executables`` (403); the resolved path runs."""
        cfg = self.config
        seen: dict[str, str] = {}  # a batch usually runs one executable many times: resolve it once
        out = []
        for spec in specs:
            if "executable" in spec:
                exe = spec["executable"]
                if exe not in seen:
                    seen[exe] = resolve_executable(exe, cfg.allowed_executables, cfg.allow_any_executable)
                spec = {**spec, "executable": seen[exe]}
            out.append(spec)
        return out

    def _function_problems(self, i: int, spec: dict[str, Any]) -> list[str]:
        fn = spec["function"]
        if not isinstance(fn, str):
            return [f"task {i}: function must be 'module:qualname' or a pickled payload"]
        if spec.get("pickled"):
            if not self.config.allow_pickled_functions:
                raise PluginError("pickled functions are disabled on this edge (allow_pickled_functions)", 403)
            try:
                base64.b64decode(fn, validate=True)
            except ValueError:
                return [f"task {i}: pickled payload is not base64"]
            return []
        if ":" not in fn:
            return [f"task {i}: function must look like 'module:qualname'"]
        allowed = self.config.allowed_functions
        if allowed is not None and not any(fnmatch.fnmatchcase(fn, p) for p in allowed):
            raise PluginError(f"function {fn} is not in allowed_functions", 403)
        return []

    # -- routes ---------------------------------------------------------------------------------

    def _session(self, request: Request) -> TasksSession:
        session = self._get_session(request.path_params["sid"])
        assert isinstance(session, TasksSession)  # session_class: every session of this plugin is one
        return session

    async def submit_tasks(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        self.require_role(Role.user)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:  # 1e400 and NaN too: orjson refuses what is not a finite number
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        if isinstance(body, dict) and "items" in body:
            try:
                specs = expand(body)
            except ValueError as exc:
                raise PluginError(str(exc), 422) from exc
        elif isinstance(body, dict) and "tasks" in body:
            specs = body["tasks"]
        else:
            raise PluginError("send {\"template\": {...}, \"items\": [...]} or {\"tasks\": [...]}", 422)
        return {"uids": session.submit(self._validate(specs))}

    async def submit_form(self, request: Request) -> dict[str, Any]:
        """The Explorer's form: one executable, ``count`` times."""
        session = self._session(request)
        self.require_role(Role.user)
        body = await request.json()
        try:
            count = int(body.get("count") or 1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PluginError("count must be a whole number", 422) from exc
        args = body.get("arguments") or []
        if isinstance(args, str):
            args = args.split()
        spec = {"executable": body.get("executable"), "arguments": args}
        return {"uids": session.submit(self._validate([dict(spec) for _ in range(max(1, min(count, 10000)))]))}

    async def list_tasks(self, request: Request) -> dict[str, Any]:
        """One page in uid order: ``?state=&limit=&after=``; ``next`` is the cursor of the next page (or null)."""
        session = self._session(request)
        query = request.query_params
        state_name = query.get("state") or None
        try:
            state = TaskState(state_name) if state_name is not None else None
        except ValueError as exc:
            raise PluginError(f"state must be one of {', '.join(s.value for s in TaskState)}", 422) from exc
        try:
            limit = int(query.get("limit") or PAGE_DEFAULT)
        except ValueError as exc:
            raise PluginError("limit must be a whole number", 422) from exc
        if not 0 <= limit <= PAGE_MAX:
            raise PluginError(f"limit must be between 0 and {PAGE_MAX}", 422)
        after_uid = query.get("after") or None
        after = 0 if after_uid is None else number_of(after_uid)
        if after is None:
            raise PluginError(f"after must be a task uid such as {uid_of(1)}", 422)
        tasks = session.page(state, after, limit + 1) if limit else []
        more = len(tasks) > limit
        tasks = tasks[:limit]
        return {"tasks": [t.brief() for t in tasks], "counts": session.counts(),
                "forgotten": session.forgotten_count, "next": tasks[-1].uid if more else None}

    async def task_counts(self, request: Request) -> dict[str, Any]:
        """Tasks by state over all the caller's sessions (an admin's: everyone's); no session needed.
        What the Explorer's dashboard shows as "my running tasks": O(sessions), no task is read."""
        who = current_principal.get()
        counts = dict.fromkeys((state.value for state in TaskState), 0)
        sessions = 0
        for session in list(self._sessions.values()):
            if isinstance(session, TasksSession) and self._visible(session.owner, who):
                sessions += 1
                for state, n in session.counts().items():
                    counts[state] += n
        return {"counts": counts, "sessions": sessions}

    async def get_task(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        uid = request.path_params["uid"]
        task = session.tasks.get(uid)
        if task is None:
            gone = session.forgotten_state(uid)
            if gone is not None:
                raise PluginError(f"task {uid} ended {gone.value} and was forgotten: a session keeps at most "
                                  f"max_tasks ({self.config.max_tasks}) finished tasks", 404)
            raise PluginError(f"no task {uid} in this session", 404)
        session.mark_read(task)
        return task.full()

    async def cancel_task(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        uid = request.path_params["uid"]
        if uid not in session.tasks:
            raise PluginError(f"no task {uid} in this session", 404)
        return {"cancelled": await session.cancel([uid])}

    async def cancel_all(self, request: Request) -> dict[str, Any]:
        session = self._session(request)
        return {"cancelled": await session.cancel(session.unfinished_uids())}

    @staticmethod
    async def _uids_body(request: Request, what: str) -> tuple[dict[str, Any], list[str] | None]:
        body = orjson.loads(raw) if (raw := await request.body()) else {}
        uids = body.get("uids") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not (uids is None or (isinstance(uids, list)
                                                                and all(isinstance(u, str) for u in uids))):
            raise PluginError(f"send {{\"uids\": [\"task.000001\", ...]{what}}}", 422)
        return body, uids

    async def wait_tasks(self, request: Request) -> dict[str, Any]:
        """Long-poll fallback for clients without the event stream: returns when done or after ``timeout``.

        With ``uids``: their final states (``states``; forgotten tasks too) and the uids this
        session never had (``unknown``); without: ``counts``. Costs the uids asked about.
        """
        session = self._session(request)
        try:
            body, uids = await self._uids_body(request, ", \"timeout\": seconds")
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        raw = body.get("timeout")
        try:
            timeout = 30.0 if raw is None else float(raw)
            if timeout != 0:  # 0: answer now
                timeout = min(check_number(timeout, "timeout", MAX_TIMEOUT), 50)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PluginError(f"timeout: {exc}", 422) from exc
        done = await session.wait(uids, timeout)
        if uids is None:
            return {"done": done, "counts": session.counts()}
        found, unknown = session.states(uids)
        return {"done": done and not unknown, "states": {t["uid"]: t["state"] for t in found if t["state"] in FINAL},
                "unknown": unknown}

    async def task_states(self, request: Request) -> dict[str, Any]:
        """``{"uids": [...]}`` → their brief records (``tasks``) and the uids never seen (``unknown``)."""
        session = self._session(request)
        try:
            _body, uids = await self._uids_body(request, "")
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        found, unknown = session.states(uids or [])
        return {"tasks": found, "unknown": unknown}

    async def get_tasks(self, request: Request) -> Response:
        """``{"uids": [...]}`` (at most GET_TASKS_MAX) → their whole records, as ``get_task`` answers
        them (``tasks``), the uids never seen (``unknown``), the forgotten ones with their final
        state (``forgotten``) and, past GET_TASKS_BYTES of records, the uids left to ask again
        (``more``; the first record is always answered). Each record is serialized once, here."""
        session = self._session(request)
        try:
            _body, uids = await self._uids_body(request, "")
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"the body is not JSON: {exc}", 422) from exc
        uids = uids or []
        if len(uids) > GET_TASKS_MAX:
            raise PluginError(f"at most {GET_TASKS_MAX} uids per get_tasks call, not {len(uids)}", 422)
        parts: list[bytes] = []
        unknown: list[str] = []
        forgotten: dict[str, str] = {}
        more: list[str] = []
        size = 0
        for uid in uids:
            task = session.tasks.get(uid)
            if task is None:
                gone = session.forgotten_state(uid)
                if gone is None:
                    unknown.append(uid)
                else:
                    forgotten[uid] = gone.value
            elif parts and size >= GET_TASKS_BYTES:
                more.append(uid)
            else:
                part = json_bytes(task.full())  # as a route's answer is rendered (sdk.plugin.JSON)
                size += len(part)
                parts.append(part)
                session.mark_read(task)
        tail = orjson.dumps({"unknown": unknown, "forgotten": forgotten, "more": more})
        return Response(b'{"tasks":[' + b",".join(parts) + b"]," + tail[1:], media_type="application/json")

    async def backends(self, request: Request) -> dict[str, Any]:
        from .backends.rhapsody import available

        return {"default": self.config.backend, "local_workers": self.local.workers,
                "available": ["local", "dask"] + (["rhapsody"] if available() else [])}
