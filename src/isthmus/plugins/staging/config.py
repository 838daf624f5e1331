"""Configuration of the staging plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StagingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roots: list[str] | None = Field(
        None, description="Directories files may be read and written in (default: $HOME and $SCRATCH or /tmp).")
    allow_dot_dirs: list[str] = Field(
        default_factory=list, description="Dot-names (e.g. '.config') allowed under the roots; others are refused.")
    chunk_size: int = Field(1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024, description="Read size for downloads.")
    max_file_size: int | None = Field(None, ge=1, description="Largest upload in bytes (None: no limit).")
    shared_read: bool = Field(
        False, description="Let every principal list and read entries in the roots that were not put there "
                           "through Isthmus (pre-existing data). Off: only admins see them. Entries uploaded "
                           "by a principal stay that principal's either way.")
    state_dir: str | None = Field(
        None, description="Where the ownership records live (default <state_dir>/staging); never served.")
