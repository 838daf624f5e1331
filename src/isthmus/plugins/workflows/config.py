"""Configuration of the workflows plugin (hosted on the bridge)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkflowsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: str | None = Field(None, description="Where workflow records live (default <state_dir>/workflows).")
    edge_wait: float = Field(600.0, gt=0, le=7 * 86400, allow_inf_nan=False,
                             description="Seconds a step waits for its edge to come back before it fails.")
    poll_max: float = Field(5.0, ge=0.5, le=300, allow_inf_nan=False,
                            description="Longest pause between two looks at a running job.")
    max_document: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                              description="Largest workflow document, in bytes.")
    max_running: int = Field(1000, ge=1, description="Workflows running at once on this bridge (more: 429).")
