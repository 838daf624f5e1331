"""What a pool is made of: its name, size bounds and the resources of each pilot job."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..jobpolicy import check_text
from ..psij.spec import parse_duration

POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,23}")  # no dots: child edges are <edge>.<pool>.<jobid>


class DaskOptions(BaseModel):
    """A pilot's own Dask cluster (``dask: true`` is ``dask: {}``): one worker per node of the pilot."""

    model_config = ConfigDict(extra="forbid")

    threads: int | None = Field(None, ge=1, le=4096, description="threads per worker (default: the pool's cores)")
    interface: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,32}$",
                                  description="network interface the scheduler and workers use (e.g. ib0); "
                                              "default: the node's address")


class PoolSpec(BaseModel):
    """A pool: ``min_size``..``max_size`` pilot jobs of ``nodes`` x ``cores`` (and ``gpus``) for ``walltime``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="letters, digits, _ and -, at most 24; no dots")
    min_size: int = Field(0, ge=0, le=100_000)
    max_size: int = Field(1, ge=1, le=100_000)
    nodes: int = Field(1, ge=1, le=100_000)
    cores: int = Field(1, ge=1, le=100_000, description="cores per pilot: its task slots")
    gpus: int = Field(0, ge=0, le=100_000)
    walltime: int = Field(600, description="seconds (or HH:MM:SS) per pilot job")
    partition: str | None = None
    account: str | None = None
    retries: int = Field(2, ge=0, le=100, description="runs a task may lose to dying pilots before it FAILS")
    idle_timeout: float | None = Field(None, ge=1, le=7 * 86400, description="default: the plugin's idle_timeout")
    dask: DaskOptions | None = Field(None, description="true or {threads, interface}: each pilot starts a Dask "
                                                       "cluster across its nodes and runs its tasks there")

    @field_validator("dask", mode="before")
    @classmethod
    def _dask(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else None
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not POOL_NAME.fullmatch(value):
            raise ValueError("a pool name is 1-24 letters, digits, _ or -, starting with a letter or digit (no dots)")
        return value

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime(cls, value: Any) -> int:
        return parse_duration(value)

    @field_validator("partition", "account")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value, "partition/account")

    @model_validator(mode="after")
    def _sizes(self) -> PoolSpec:
        if self.min_size > self.max_size:
            raise ValueError("min_size must not be larger than max_size")
        return self

    @property
    def slots(self) -> int:
        """Tasks one pilot runs at once: its cores, or with Dask its workers' threads on all its nodes."""
        if self.dask is not None:
            return (self.dask.threads or self.cores) * self.nodes
        return self.cores
