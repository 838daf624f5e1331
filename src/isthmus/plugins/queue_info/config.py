"""Configuration of the queue_info plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QueueInfoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_ttl: float = Field(10.0, ge=0, description="Seconds a scheduler answer is reused by all sessions.")
    prefetch: bool = Field(True, description="Fetch partitions and jobs in the background at start-up.")
    psij_database: str | None = Field(
        None, description="psij's job records (jobs.sqlite), read to learn who submitted a scheduler job "
                          "(default: the store of the psij plugin running beside this one, else "
                          "<state_dir>/psij/jobs.sqlite).")
