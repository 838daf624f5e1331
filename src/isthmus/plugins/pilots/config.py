"""Configuration of the pilots plugin.

The executable and environment keys (``allow_any_executable``, ``allowed_executables``,
``env_passthrough``, ``allowed_loader_variables``) are handed to the pilots' own ``tasks``
plugin, so tasks in a pool obey the same policy as tasks on the edge.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from ..jobpolicy import JobPolicyConfig


class PilotsConfig(JobPolicyConfig):
    model_config = ConfigDict(extra="forbid")

    state_dir: str | None = Field(None, description="Where pools, pilots and tasks live (default <state_dir>/pilots).")
    executor: str = Field("auto", description="PSI/J executor for pilot jobs (auto: the edge's batch system).")
    bridge_url: list[str] = Field(default_factory=list,
                                  description="Bridge URL(s) pilots dial from compute nodes (default: the edge's).")
    idle_timeout: float = Field(60.0, ge=1, le=7 * 86400,
                                description="Seconds a pilot may sit idle before it is released (scancel).")
    prefetch: int = Field(4, ge=1, le=4096, description="Tasks handed to a pilot per slot ahead of time.")
    start_timeout: float = Field(600.0, ge=10, description="Seconds a running pilot has to connect before it is "
                                                           "cancelled as broken.")
    tick: float = Field(0.5, gt=0, le=10, description="Seconds between scheduling passes.")
    max_pools: int = Field(100, ge=1, description="Active pools at most.")
    max_pool_size: int = Field(1000, ge=1, description="Largest max_size a pool may ask for.")
    max_queued: int = Field(1_000_000, ge=1, description="Unfinished tasks at most, over all pools.")
    max_batch: int = Field(65_536, ge=1, description="Most tasks in one submission.")
    collect_output: bool = Field(True, description="Fetch each finished task's output (stdout, stderr, return "
                                                  "value) from its pilot; false: state and exit code only, one "
                                                  "call per batch (several times the throughput).")
    task_config: dict[str, Any] = Field(default_factory=dict,
                                        description="More config of the pilots' tasks plugin (e.g. output_tail).")
