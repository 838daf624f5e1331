"""Configuration of the tasks plugin.

The executable and environment keys (``allow_any_executable``, ``allowed_executables``,
``env_passthrough``, ``allowed_loader_variables``) come from :mod:`isthmus.plugins.jobpolicy`,
shared with the psij plugin so both mean the same thing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..jobpolicy import JobPolicyConfig


class DaskTLS(BaseModel):
    """Mutual TLS to a Dask scheduler: the CA that signs the cluster's certificates, and this client's own."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str
    cert: str
    key: str


class TasksConfig(JobPolicyConfig):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field("local", description="Default backend: local | dask | rhapsody.")
    workers: int | None = Field(None, ge=1, le=1024, description="Local pool size (default: the cores).")
    dask_address: str | None = Field(None, description="Scheduler address for the dask backend.")
    dask_addresses: list[str] = Field(
        default_factory=list,
        description="Dask scheduler addresses users may name in register_session(address=...), besides "
                    "dask_address; any other address is refused (403), so users cannot make the edge dial "
                    "arbitrary hosts and ports.")
    dask_tls: DaskTLS | None = Field(
        None, description="Files {ca_file, cert, key} for mutual TLS to dask_address/dask_addresses schedulers; "
                          "set, plain tcp:// is refused (a Dask scheduler runs whatever its clients send).")
    dask_jobqueue: dict[str, object] | None = Field(
        None, description="dask-jobqueue cluster for the dask backend, e.g. {kind: slurm, cores: 32, memory: 64GB, "
                          "jobs: 4}; used when no dask_address is given.")
    rhapsody_backend: str = Field("concurrent", description="Rhapsody backend for backend=rhapsody "
                                                            "(concurrent, dask, dragon, ...).")
    allow_pickled_functions: bool = Field(True, description="Accept cloudpickle payloads (code!) from users.")
    allowed_functions: list[str] | None = Field(
        None, description="If set, only these module:qualname functions (fnmatch patterns) may run.")
    output_tail: int = Field(4096, ge=0, le=1 << 20, description="Bytes of stdout/stderr kept per task.")
    max_tasks: int = Field(200_000, ge=100, description="Finished tasks kept per session; beyond, the oldest go: "
                                                        "those already read with get_task first.")
    max_batch: int = Field(65_536, ge=1, description="Most tasks in one submission.")
