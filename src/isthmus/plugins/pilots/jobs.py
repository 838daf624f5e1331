"""Pilot jobs through the edge's ``psij`` plugin: submit, follow, cancel, re-attach.

A pilot is an ordinary psij job record (so it is listed with the edge's jobs, keeps its exit
code, and is re-attached after an edge restart by psij itself); its command is fixed by this
plugin — ``python -m isthmus.plugins.pilots.launch <dir>`` — never by a user, so psij's
executable allow-list does not apply to it. Each pilot has a private directory (mode 700)
holding the child edge's config, and, between submission and connection, its token. A pool
with ``dask`` on also gets ``dask.json`` there, and the child's tasks plugin uses the Dask
backend over mutual TLS with the pilot's own certificate (see ``daskcluster``).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from ... import schedulers
from ...errors import PluginError
from ...jobstates import JobState
from ...private_files import write_private
from . import daskcluster
from .config import PilotsConfig
from .spec import PoolSpec

# What the pilots' tasks may read of their allocation, on top of the policy's passthrough.
ALLOCATION_VARIABLES = ["SLURM_JOB_ID", "SLURM_JOBID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_CPUS_*",
                        "SLURM_JOB_CPUS_*", "SLURM_JOB_PARTITION", "PBS_JOBID", "PBS_NODEFILE", "CUDA_VISIBLE_DEVICES"]
TOKEN_MARGIN = 600.0  # a child token outlives its job's walltime by this much (queue wait aside)


def field_error(field: str, problem: str) -> PluginError:
    return PluginError({"message": f"the pool spec has 1 problem(s): {field}: {problem}",
                        "errors": [{"field": field, "problem": problem}]}, 422)


class PilotJobs:
    """Submits and controls pilot jobs; ``psij`` is the edge's PluginPsij."""

    def __init__(self, psij: Any, base: Path, config: PilotsConfig) -> None:
        self.psij = psij
        self.base = base
        self.config = config

    def executor(self) -> str:
        name: str = self.psij.executor_name(self.config.executor)
        return name

    async def check_partition(self, spec: PoolSpec) -> None:
        """422 naming the field when one pilot could never fit the partition; nothing is submitted."""
        try:
            system = schedulers.current()
            partitions = await system.partitions()
        except LookupError:
            return  # no batch system: pilots run locally, nothing to check against
        if not partitions:
            return
        if spec.partition is None:
            chosen = next((p for p in partitions if p.default), partitions[0])
        else:
            found = [p for p in partitions if p.name == spec.partition]
            if not found:
                raise field_error("partition", f"no partition {spec.partition!r} (there are: "
                                  f"{', '.join(p.name for p in partitions)})")
            chosen = found[0]
        nodes = chosen.total_nodes or len(chosen.nodes)
        limit_nodes = min(n for n in (chosen.max_nodes, nodes or None) if n) if (chosen.max_nodes or nodes) else None
        if limit_nodes is not None and spec.nodes > limit_nodes:
            raise field_error("nodes", f"{spec.nodes} nodes per pilot; partition {chosen.name} allows {limit_nodes}")
        if nodes and chosen.total_cpus and spec.cores > chosen.total_cpus // nodes:
            raise field_error("cores", f"{spec.cores} cores per pilot; a node of partition {chosen.name} has "
                                       f"{chosen.total_cpus // nodes}")
        if spec.gpus and nodes and spec.gpus > chosen.total_gpus // nodes:
            raise field_error("gpus", f"{spec.gpus} GPUs per pilot; a node of partition {chosen.name} has "
                                      f"{chosen.total_gpus // nodes}")
        if chosen.max_time is not None and spec.walltime > chosen.max_time:
            raise field_error("walltime", f"{spec.walltime} s per pilot; partition {chosen.name} allows "
                                          f"{chosen.max_time} s")

    def _directory(self, job_id: str) -> Path:
        return self.base / "pilots" / job_id

    def _child_config(self, spec: PoolSpec, directory: Path) -> dict[str, Any]:
        cfg = self.config
        tasks = {"workers": spec.cores, "allow_any_executable": cfg.allow_any_executable,
                 "allowed_executables": cfg.allowed_executables,
                 "env_passthrough": [*cfg.env_passthrough, *ALLOCATION_VARIABLES],
                 "allowed_loader_variables": cfg.allowed_loader_variables, **cfg.task_config}
        if spec.dask is not None:  # the launcher adds dask_address: only this child may use its scheduler
            tasks.update(workers=1, backend="dask", dask_tls=daskcluster.tls_files(directory))
        return {"state_dir": str(directory / "state"), "scheduler": "none", "plugins": {"tasks": tasks}}

    def submit(self, spec: PoolSpec, pool: str, job_id: str, owner: str, bridge_urls: list[str]) -> None:
        """Write the pilot's directory and hand the job to psij (blocking: run in a thread)."""
        directory = self._directory(job_id)
        directory.mkdir(parents=True, mode=0o700)
        (directory / "isthmus.yaml").write_text(yaml.safe_dump(self._child_config(spec, directory)))
        argv = [sys.executable, "-m", "isthmus", "edge", "--plugins", "tasks",
                "--config", str(directory / "isthmus.yaml"),
                *[arg for url in (self.config.bridge_url or bridge_urls) for arg in ("--bridge", url)]]
        (directory / "launch.json").write_text(json.dumps({"argv": argv}))
        attributes: dict[str, Any] = {"duration": spec.walltime, "node_count": spec.nodes, "process_count": 1,
                                      "cpu_cores_per_process": spec.cores, "queue_name": spec.partition,
                                      "account": spec.account}
        if spec.dask is not None:
            (directory / daskcluster.OPTIONS).write_text(json.dumps(
                {"threads": spec.dask.threads or spec.cores, "interface": spec.dask.interface}))
            if spec.nodes > 1:  # the cores on every node, for the worker there (one process each)
                attributes.update(process_count=spec.nodes, processes_per_node=1)
        if spec.gpus:
            attributes["gpu_cores_per_process"] = spec.gpus
        job_spec = {"executable": sys.executable, "arguments": ["-m", "isthmus.plugins.pilots.launch", str(directory)],
                    "name": f"pilot-{pool}", "directory": str(directory), "environment": {},
                    "inherit_environment": True, "stdin_path": None, "stdout_path": str(directory / "stdout"),
                    "stderr_path": str(directory / "stderr"), "launcher": None, "attributes": attributes}
        rec = {"id": job_id, "owner": owner, "executor": self.executor(), "native_id": None,
               "spec": job_spec, "state": JobState.NEW.value, "exit_code": None, "message": None,
               "workdir": str(directory), "stdout_path": job_spec["stdout_path"],
               "stderr_path": job_spec["stderr_path"], "exit_file": str(directory / "exit_code")}
        self.psij.submit_record(rec)

    def status(self, job_id: str) -> tuple[str, str | None, str | None]:
        """(psij state, native id, message) of the pilot's job."""
        rec = self.psij.job_record(job_id)
        if rec is None:
            return JobState.FAILED.value, None, "the job record is gone"
        return rec["state"], rec["native_id"], rec["message"]

    def vouch(self, job_id: str, edge: str, token: str) -> None:
        """Write the child's name, then its token (mode 600, atomically) for the launcher."""
        directory = self._directory(job_id)
        (directory / "name").write_text(edge)
        write_private(directory / "token", token)

    def forget_token(self, job_id: str) -> None:
        (self._directory(job_id) / "token").unlink(missing_ok=True)

    async def cancel(self, job_id: str, native_id: str | None) -> None:
        """Cancel the pilot's batch job (scancel through PSI/J; the batch system if psij lost it)."""
        if not await self.psij.cancel_record(job_id) and native_id is not None:
            await schedulers.current().cancel(native_id)

    def clean(self, job_id: str) -> None:
        """After the job: drop its token, Dask key and the child edge's state; keep stdout/stderr (psij lists them)."""
        self.forget_token(job_id)
        for name in (daskcluster.KEY, daskcluster.CERT):
            (self._directory(job_id) / name).unlink(missing_ok=True)
        shutil.rmtree(self._directory(job_id) / "state", ignore_errors=True)


def child_name(edge: str, pool: str, native_id: str) -> str:
    return f"{edge}.{pool}.{re.sub(r'[^A-Za-z0-9_-]', '-', native_id)}"
