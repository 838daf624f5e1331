"""Configuration of the psij plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PsijConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: str | None = Field(None, description="Where job records live (default <state_dir>/psij).")
    allow_any_executable: bool = Field(False, description="Skip the allow-lists (isthmus demo turns this on).")
    allowed_executables: list[str] = Field(
        default_factory=lambda: ["/bin/*", "/usr/bin/*", "/usr/local/bin/*", "~/*"],
        description="Glob patterns of executables (after resolving PATH and symlinks) jobs may run.")
    allowed_directories: list[str] = Field(
        default_factory=lambda: ["~", "/tmp"],
        description="Directories (and their subdirectories) jobs may run in and write output to.")
    queue_polling_interval: int = Field(1, ge=1, description="Seconds between PSI/J's scheduler polls.")
    output_chunk: int = Field(65536, ge=1024, le=8 * 1024 * 1024, description="Largest output chunk per call.")
    retention_days: float = Field(30.0, gt=0, description="Finished jobs are forgotten after this long.")
    max_jobs: int = Field(10_000, ge=10, description="At most this many records are kept.")
