"""psij: submit, watch, read output, cancel — through PSI/J executors, with durable records.

Each job's command runs inside a tiny ``/bin/sh`` wrapper that writes its exit code to a
file: that is how a job keeps its true exit code across an edge restart (PSI/J's local
executor reports 0 for re-attached processes) and how a process that ended while the edge
was down is still accounted for.

What a job may run, the environment it gets (never the edge's own: it holds the edge's
enrolment token) and where it may write are decided by :mod:`isthmus.plugins.jobpolicy`,
shared with the tasks plugin.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shlex
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psij  # noqa: F401 - imported here, on the main thread, so its local executor can use signals
import psutil
from fastapi import Request
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import ValidationError

from ... import schedulers
from ...config import default_state_dir
from ...errors import PluginError
from ...jobstates import JobState, from_psij
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from ...types import Principal, Role, current_principal
from ..jobpolicy import build_environment, check_environment, check_output_path, real_path, resolve_executable
from .config import PsijConfig
from .spec import JobSpecModel
from .store import FINAL, JobStore

log = logging.getLogger("isthmus.plugins.psij")
LOCAL_OWNER = "local"
WRAPPER = '"$@"; rc=$?; echo "$rc" > {exit_file}; exit "$rc"'
MAX_OFFSET = 1 << 62  # a sane bound for a byte offset; beyond the file's size nothing is read
ENV_OVERRIDES = ("SBATCH_EXPORT", "SBATCH_GET_USER_ENV")
OUTPUTS = ("stdout_path", "stderr_path")  # where the job writes: never a dot-file in $HOME
LIST_MAX = 1000  # jobs in one list_jobs page (and the default)


def _owner_name(who: Principal | None) -> str:
    return who.id if who is not None else LOCAL_OWNER


def _expand(pattern: str) -> str:
    return os.path.expanduser(pattern)


class PsijSession(PluginSession):
    """Jobs belong to principals, not sessions; a session is the seed's handle for a client."""


class PluginPsij(Plugin):
    plugin_name = "psij"
    title = "Jobs"
    description = "Submit jobs through PSI/J (Slurm, PBS, LSF, Flux or local), watch them, read their output."
    version = "0.1.0"
    ui_module = "ui.js"
    session_class = PsijSession
    config_model = PsijConfig
    ui_config = {
        "icon": "🚀",
        "title": "Jobs",
        "description": "Submit jobs through PSI/J, follow their state and output, cancel them.",
        "forms": [{"id": "submit", "title": "Submit a job", "fields": [
            {"name": "executable", "type": "text", "label": "Executable", "default": "/bin/echo", "required": True},
            {"name": "arguments", "type": "text", "label": "Arguments", "default": "hello"},
            {"name": "directory", "type": "path", "label": "Working directory"},
            {"name": "executor", "type": "select", "label": "Executor",
             "options": ["auto", "local", "slurm", "pbs", "lsf", "flux"], "default": "auto"}],
            "submit": {"label": "Submit", "style": "success", "endpoint": "submit_job/{sid}"}}],
        "monitors": [{"id": "jobs", "title": "Jobs", "type": "task_list", "endpoint": "list_jobs/{sid}",
                      "empty_text": "No jobs yet."}],
        "notifications": {"topic": "job_status", "id_field": "job_id", "state_field": "state"},
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        base = Path(self.config.state_dir).expanduser() if self.config.state_dir else self._default_dir()
        self.dir = base
        self.jobs_dir = base / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(base / "jobs.sqlite")
        self._executors: dict[str, Any] = {}
        self._executor_lock = threading.Lock()
        self._live: dict[str, Any] = {}  # job id -> psij.Job while we watch it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.add_route_post("submit_job/{sid}", self.submit_job)
        self.add_route_get("job_status/{sid}/{job_id}", self.job_status)
        self.add_route_get("list_jobs/{sid}", self.list_jobs)
        self.add_route_post("cancel_job/{sid}/{job_id}", self.cancel_job)
        self.add_route_get("executors", self.executors)

    def _default_dir(self) -> Path:
        host = self.host
        app_config = getattr(host, "app_config", None)
        root = app_config.resolved_state_dir() if app_config is not None else default_state_dir()
        return root / "psij"

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="workload", label="Workload", icon="layers", order=50,
                            items=[MenuItem(id="jobs", label="Jobs", path="/psij", icon="play")])]

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name in ENV_OVERRIDES:
            if name in os.environ:  # sbatch/qsub read these and they beat the script's directives
                log.warning("%s is set in the edge's environment: it overrides the clean environment psij "
                            "gives batch jobs (--export=NONE); unset it for the edge", name)
        await asyncio.to_thread(self._prune)
        await asyncio.to_thread(self._reattach_all)
        self._pruner = asyncio.create_task(self._prune_loop(), name="psij-retention")

    async def on_shutdown(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
        self.store.close()

    def collect_metrics(self) -> Iterator[Metric]:
        """Jobs by state, every state present (a series that vanishes at 0 reads as missing data)."""
        counts = self.store.count_by_state()
        jobs = GaugeMetricFamily("isthmus_edge_jobs", "Jobs the psij plugin keeps, by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(3600)
            await asyncio.to_thread(self._prune)

    def _prune(self) -> None:
        for rec in self.store.prune(self.config.retention_days * 86400, self.config.max_jobs):
            workdir = Path(rec["workdir"])
            if workdir.parent == self.jobs_dir:
                shutil.rmtree(workdir, ignore_errors=True)

    # -- executors ------------------------------------------------------------------------------

    def _executor_name(self, asked: str) -> str:
        if asked != "auto":
            return asked
        try:
            name = schedulers.current().psij_executor
        except LookupError:
            name = "local"
        return name if name not in ("simulated", "none") else "local"

    def _executor(self, name: str) -> Any:
        from psij import JobExecutor

        with self._executor_lock:
            if name not in self._executors:
                config = None
                if name in ("slurm", "pbs", "pbspro", "lsf", "cobalt"):
                    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

                    config_cls: Any = BatchSchedulerExecutorConfig
                    if name == "slurm":
                        from psij.executors.batch.slurm import SlurmExecutorConfig

                        config_cls = SlurmExecutorConfig
                    config = config_cls(work_directory=self.dir / "work",
                                        queue_polling_interval=self.config.queue_polling_interval,
                                        initial_queue_polling_delay=0)
                try:
                    self._executors[name] = JobExecutor.get_instance(name, config=config) if config \
                        else JobExecutor.get_instance(name)
                except ValueError as exc:
                    raise PluginError(f"PSI/J has no executor {name!r}: {exc}", 422) from exc
            return self._executors[name]

    # -- safety -----------------------------------------------------------------------------------

    def _inside(self, path: Path) -> bool:
        roots = [real_path(d) for d in self.config.allowed_directories]
        return any(path == r or r in path.parents for r in roots)

    def _check_allowed(self, spec: JobSpecModel) -> dict[str, Any]:
        """What the job really runs and touches, resolved; 403 when the allow-lists say no.

        Everything is resolved (PATH, ``~``, ``..``, symlinks) before it is matched, and the
        resolved values are what the job uses, so a path cannot mean one thing when checked
        and another when used. Output paths never name a dot-file in ``$HOME``, whatever the
        allow-lists say.
        """
        cfg = self.config
        resolved: dict[str, Any] = {"executable": resolve_executable(spec.executable, cfg.allowed_executables,
                                                                      cfg.allow_any_executable)}
        for label in ("directory", "stdin_path", "stdout_path", "stderr_path"):
            value = getattr(spec, label)
            if not value:
                resolved[label] = None
                continue
            path = check_output_path(label, value) if label in OUTPUTS else real_path(value)
            if not cfg.allow_any_executable and not self._inside(path):
                raise PluginError(f"{label} {value} is outside the allowed directories "
                                  f"({', '.join(cfg.allowed_directories)}; allowed_directories)", 403)
            resolved[label] = str(path)
        return resolved

    def _environment(self, spec: JobSpecModel, executor: str) -> dict[str, str]:
        """The job's whole environment: never the edge's own (its token!), only allow-listed variables.

        PSI/J gets it with ``inherit_environment=False``: the local executor then starts the
        job with exactly this, and batch executors write ``--export=NONE`` (Slurm) or leave
        out ``-V`` (PBS) and export these variables in the script.
        """
        env = build_environment(spec.environment, self.config.env_passthrough, spec.inherit_environment)
        if executor == "slurm":  # srun steps inside the job keep the job's environment (not Slurm's NONE)
            env = {"SLURM_EXPORT_ENV": "ALL", **env}
        return env

    # -- submission ---------------------------------------------------------------------------------

    def _psij_job(self, rec: dict[str, Any]) -> Any:
        from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

        spec = JobSpecModel.model_validate(rec["spec"])
        a = spec.attributes
        resources = None
        if any(v is not None for v in (a.node_count, a.process_count, a.processes_per_node,
                                        a.cpu_cores_per_process, a.gpu_cores_per_process, a.memory)):
            resources = ResourceSpecV1(node_count=a.node_count, process_count=a.process_count,
                                       processes_per_node=a.processes_per_node,
                                       cpu_cores_per_process=a.cpu_cores_per_process,
                                       gpu_cores_per_process=a.gpu_cores_per_process,
                                       exclusive_node_use=a.exclusive_node_use, memory=a.memory)
        attributes = JobAttributes(duration=spec.duration(), queue_name=a.queue_name, account=a.account,
                                   reservation_id=a.reservation_id, project_name=a.project_name,
                                   custom_attributes=dict(a.custom_attributes) or None)
        wrapper = WRAPPER.format(exit_file=shlex.quote(rec["exit_file"]))
        environment: dict[str, str | int] = {**self._environment(spec, rec["executor"])}  # as JobSpec types it
        job_spec = JobSpec(executable="/bin/sh", arguments=["-c", wrapper, "isthmus-job", spec.executable,
                                                            *spec.arguments],
                           directory=Path(_expand(spec.directory)) if spec.directory else Path(rec["workdir"]),
                           name=spec.name or f"isthmus-{rec['id']}", inherit_environment=False,
                           environment=environment,
                           stdin_path=Path(_expand(spec.stdin_path)) if spec.stdin_path else None,
                           stdout_path=Path(rec["stdout_path"]), stderr_path=Path(rec["stderr_path"]),
                           resources=resources, attributes=attributes, launcher=spec.launcher)
        job = Job(job_spec)
        job.set_job_status_callback(functools.partial(self._on_status, rec["id"]))
        return job

    def _parse_request(self, body: Any) -> tuple[JobSpecModel, str]:
        if not isinstance(body, dict):
            raise PluginError("send a JSON object: {\"job_spec\": {...}, \"executor\": \"auto\"}", 422)
        if "job_spec" in body:
            raw, executor = body["job_spec"], body.get("executor", "auto")
            extra = set(body) - {"job_spec", "executor"}
            if extra:
                raise PluginError({"message": "unknown keys", "errors": sorted(extra)}, 422)
        else:  # a flat form from the Explorer
            raw = {k: v for k, v in body.items() if k != "executor" and v not in (None, "")}
            executor = body.get("executor") or "auto"
        try:
            spec = JobSpecModel.model_validate(raw)
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(spec)", "problem": e["msg"]}
                      for e in exc.errors()]
            raise PluginError({"message": f"the job spec has {len(errors)} problem(s)",
                               "errors": errors}, 422) from exc
        try:
            check_environment(spec.environment, self.config.allowed_loader_variables)
        except ValueError as exc:
            raise PluginError({"message": "the job spec has 1 problem(s)",
                               "errors": [{"field": "environment", "problem": str(exc)}]}, 422) from exc
        if not isinstance(executor, str) or not executor.isidentifier():
            raise PluginError({"message": "the job spec has 1 problem(s)",
                               "errors": [{"field": "executor", "problem": "not an executor name"}]}, 422)
        return spec, executor

    async def submit_job(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        self.require_role(Role.user)
        spec, asked = self._parse_request(await request.json())
        job_id = uuid.uuid4().hex[:12]
        workdir = self.jobs_dir / job_id
        resolved = await asyncio.to_thread(self._check_allowed, spec)
        executor_name = self._executor_name(asked)
        self._executor(executor_name)  # an unknown executor is a 422 now, not a failed job later
        who = current_principal.get()
        rec = {"id": job_id, "owner": _owner_name(who), "executor": executor_name, "native_id": None,
               "spec": {**spec.model_dump(), **resolved}, "state": JobState.NEW.value, "exit_code": None,
               "message": None, "workdir": str(workdir),
               "stdout_path": resolved["stdout_path"] or str(workdir / "stdout"),
               "stderr_path": resolved["stderr_path"] or str(workdir / "stderr"),
               "exit_file": str(workdir / "exit_code")}
        await asyncio.to_thread(self._prepare, rec)
        asyncio.get_running_loop().run_in_executor(None, self._submit, rec)  # returns at once
        return {"job_id": job_id, "executor": executor_name, "state": JobState.NEW.value}

    # -- for other plugins on this edge (pilots submits its pilot jobs as psij records) ---------------

    def executor_name(self, asked: str = "auto") -> str:
        """The PSI/J executor ``asked`` means on this edge (``auto``: the edge's batch system)."""
        return self._executor_name(asked)

    def submit_record(self, rec: dict[str, Any]) -> None:
        """Store a complete job record and submit it (blocking: call from a thread). It then lives
        like any job here: followed, re-attached after a restart, listed, pruned."""
        self._prepare(rec)
        self._submit(rec)

    def job_record(self, job_id: str) -> dict[str, Any] | None:
        return self.store.get(job_id)

    async def cancel_record(self, job_id: str) -> bool:
        """Cancel a job this edge follows; False when it follows no such job (after a restart,
        before re-attaching: cancel it through the batch system instead)."""
        job = self._live.get(job_id)
        if job is None:
            return False
        await asyncio.to_thread(job.cancel)
        return True

    def _prepare(self, rec: dict[str, Any]) -> None:
        Path(rec["workdir"]).mkdir(parents=True, exist_ok=True)
        for key in ("stdout_path", "stderr_path"):
            Path(rec[key]).parent.mkdir(parents=True, exist_ok=True)
        self.store.create(rec)  # before answering: the job id is valid the moment the client has it

    def _submit(self, rec: dict[str, Any]) -> None:
        try:
            job = self._psij_job(rec)
            self._live[rec["id"]] = job
            self._executor(rec["executor"]).submit(job)
            if job.native_id is not None:
                self.store.set_native_id(rec["id"], str(job.native_id))
        except Exception as exc:  # noqa: BLE001 - a failed submission is a FAILED job, with the reason
            log.warning("submission of job %s failed: %s", rec["id"], exc)
            self._live.pop(rec["id"], None)
            self._record(rec["id"], JobState.FAILED, None, f"submission failed: {exc}")

    # -- status --------------------------------------------------------------------------------------

    def _on_status(self, job_id: str, job: Any, status: Any) -> None:
        """PSI/J's callback (its threads): record (in our vocabulary, ``from_psij``), then notify the owner."""
        final = from_psij(status.state.name).final
        if job.native_id is not None:
            rec = self.store.get(job_id)
            if rec is not None and rec["native_id"] is None:
                self.store.set_native_id(job_id, str(job.native_id))
        exit_code = status.exit_code if final else None
        if final:
            exit_code = self._exit_file_code(job_id, exit_code)
            self._live.pop(job_id, None)
        # an attached local job reports COMPLETED whatever it returned; its exit file knows better
        self._record(job_id, from_psij(status.state.name, exit_code), exit_code, status.message)

    def _exit_file_code(self, job_id: str, fallback: int | None) -> int | None:
        rec = self.store.get(job_id)
        if rec is None:
            return fallback
        try:
            return int(Path(rec["exit_file"]).read_text().strip())
        except (OSError, ValueError):
            return fallback

    def _record(self, job_id: str, state: JobState, exit_code: int | None, message: str | None) -> None:
        rec = self.store.transition(job_id, state.value, exit_code, message)
        if rec is None:
            return
        data = {"job_id": job_id, "state": state.value, "exit_code": rec["exit_code"], "native_id": rec["native_id"],
                "executor": rec["executor"], "message": rec["message"], "time": rec["updated"]}
        owner = None if rec["owner"] == LOCAL_OWNER else Principal(rec["owner"], Role.user, rec["owner"])
        self.notify("job_status", data, owner=owner)

    def _reattach_all(self) -> None:
        """After a restart: follow every unfinished job again (or settle it if it ended meanwhile)."""
        for rec in self.store.unfinished():
            try:
                self._reattach(rec)
            except Exception as exc:  # noqa: BLE001 - one lost job must not stop the others
                log.warning("cannot re-attach job %s: %s", rec["id"], exc)
                self._record(rec["id"], JobState.FAILED, None, f"lost across an edge restart: {exc}")

    def _reattach(self, rec: dict[str, Any]) -> None:
        if not rec["native_id"]:
            self._record(rec["id"], JobState.FAILED, None, "the edge stopped before the job was submitted")
            return
        if rec["executor"] == "local" and not self._local_alive(rec):
            code = self._exit_file_code(rec["id"], None)
            if code is None:
                self._record(rec["id"], JobState.FAILED, None,
                             "the process ended while the edge was down, without an exit code")
            else:
                self._record(rec["id"], JobState.DONE if code == 0 else JobState.FAILED, code,
                             "finished while the edge was down")
            return
        job = self._psij_job(rec)
        self._live[rec["id"]] = job
        self._executor(rec["executor"]).attach(job, rec["native_id"])
        log.info("re-attached job %s (%s %s)", rec["id"], rec["executor"], rec["native_id"])

    @staticmethod
    def _local_alive(rec: dict[str, Any]) -> bool:
        """The pid is alive AND is our job (its command line carries the job's exit file)."""
        try:
            proc = psutil.Process(int(rec["native_id"]))
            return any(rec["exit_file"] in part for part in proc.cmdline())
        except (psutil.Error, ValueError):
            return False

    # -- reading ----------------------------------------------------------------------------------

    def _job_for_caller(self, job_id: str) -> dict[str, Any]:
        rec = self.store.get(job_id)
        who = current_principal.get()
        if rec is None or not (who is None or who.owns(rec["owner"])):
            raise PluginError(f"no job {job_id}", 404)
        return rec

    def _tail(self, path: str, offset: int) -> tuple[str, int]:
        """Output from ``offset`` on, at most ``output_chunk`` bytes; only the job's own files."""
        if not 0 <= offset <= MAX_OFFSET:
            raise PluginError(f"offsets must be between 0 and {MAX_OFFSET}", 422)
        try:
            with open(path, "rb") as fh:
                if offset >= os.fstat(fh.fileno()).st_size:
                    return "", offset  # nothing new (and no seek past what the file system allows)
                fh.seek(offset)
                data = fh.read(self.config.output_chunk)
        except FileNotFoundError:
            return "", offset
        return data.decode("utf-8", errors="replace"), offset + len(data)

    @staticmethod
    def _public(rec: dict[str, Any]) -> dict[str, Any]:
        times = {h["state"]: h["time"] for h in rec["history"]}
        return {"job_id": rec["id"], "state": rec["state"], "exit_code": rec["exit_code"],
                "native_id": rec["native_id"], "executor": rec["executor"], "message": rec["message"],
                "name": rec["spec"].get("name"), "executable": rec["spec"]["executable"],
                "arguments": rec["spec"].get("arguments", []), "attributes": rec["spec"].get("attributes") or {},
                "owner": rec["owner"],
                "submitted": rec["created"], "started": times.get(JobState.RUNNING.value),
                "finished": rec["updated"] if rec["state"] in FINAL else None, "history": rec["history"]}

    async def job_status(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        rec = await asyncio.to_thread(self._job_for_caller, request.path_params["job_id"])
        try:
            so = int(request.query_params.get("stdout_offset", 0))
            se = int(request.query_params.get("stderr_offset", 0))
        except ValueError as exc:
            raise PluginError("offsets must be integers", 422) from exc
        stdout, so_next = await asyncio.to_thread(self._tail, rec["stdout_path"], so)
        stderr, se_next = await asyncio.to_thread(self._tail, rec["stderr_path"], se)
        return {**self._public(rec), "stdout": stdout, "stderr": stderr, "stdout_offset": so_next,
                "stderr_offset": se_next}

    async def list_jobs(self, request: Request) -> dict[str, Any]:
        """The caller's jobs (an admin's: everyone's), newest first, one page: ``?limit=&before=&state=``.

        ``limit`` is 1 to 1000 (default 1000); ``state`` keeps jobs in these states (comma-separated,
        e.g. ``RUNNING,PENDING``); ``next`` is the job id to pass as ``before`` for the next page, or null.
        """
        self._get_session(request.path_params["sid"])
        who = current_principal.get()
        owner = None if who is None or who.is_admin else who.id
        try:
            limit = int(request.query_params.get("limit") or LIST_MAX)
        except ValueError as exc:
            raise PluginError("limit must be a whole number", 422) from exc
        if not 1 <= limit <= LIST_MAX:
            raise PluginError(f"limit must be between 1 and {LIST_MAX}", 422)
        before = request.query_params.get("before") or None
        states = [s for s in (request.query_params.get("state") or "").split(",") if s]
        unknown = [s for s in states if s not in JobState.__members__]
        if unknown:
            raise PluginError(f"state must be one of {', '.join(JobState)} (comma-separated), "
                              f"not {', '.join(unknown)}", 422)
        try:
            recs = await asyncio.to_thread(self.store.list, owner, limit + 1, before, states)
        except KeyError as exc:
            raise PluginError(f"no job {before}", 404) from exc
        page = recs[:limit]
        return {"jobs": [self._public(r) for r in page], "next": page[-1]["id"] if len(recs) > limit else None}

    async def cancel_job(self, request: Request) -> dict[str, Any]:
        self._get_session(request.path_params["sid"])
        self.require_role(Role.user)
        rec = await asyncio.to_thread(self._job_for_caller, request.path_params["job_id"])
        if rec["state"] in FINAL:
            return {"job_id": rec["id"], "state": rec["state"]}
        job = self._live.get(rec["id"])
        if job is None:
            raise PluginError(f"job {rec['id']} is not being followed on this edge; try again in a moment", 409)
        await asyncio.to_thread(job.cancel)
        return {"job_id": rec["id"], "status": "cancel requested"}

    async def executors(self, request: Request) -> dict[str, Any]:
        return {"auto": self._executor_name("auto"),
                "known": ["local", "slurm", "pbs", "lsf", "flux", "cobalt"]}
