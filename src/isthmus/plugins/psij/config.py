"""Configuration of the psij plugin.

The executable and environment keys (``allow_any_executable``, ``allowed_executables``,
``env_passthrough``, ``allowed_loader_variables``) come from :mod:`isthmus.plugins.jobpolicy`,
shared with the tasks plugin so both mean the same thing.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from ..jobpolicy import JobPolicyConfig


class PsijConfig(JobPolicyConfig):
    model_config = ConfigDict(extra="forbid")

    state_dir: str | None = Field(None, description="Where job records live (default <state_dir>/psij).")
    allowed_directories: list[str] = Field(
        default_factory=lambda: ["~", "/tmp"],
        description="Directories (and their subdirectories) jobs may run in and write output to.")
    queue_polling_interval: int = Field(1, ge=1, description="Seconds between PSI/J's scheduler polls.")
    output_chunk: int = Field(65536, ge=1024, le=8 * 1024 * 1024, description="Largest output chunk per call.")
    retention_days: float = Field(30.0, gt=0, allow_inf_nan=False,
                                  description="Finished jobs are forgotten after this long.")
    max_jobs: int = Field(10_000, ge=10, description="At most this many records are kept.")
