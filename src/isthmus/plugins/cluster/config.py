"""Configuration of the cluster plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .health import Thresholds
from .mapping import NodeMapping


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topology_file: str | None = Field(None, description="YAML topology of this edge's machine room.")
    refresh_interval: float = Field(5.0, gt=0, description="Seconds between snapshots of the scheduler.")
    history: int = Field(240, ge=1, le=10_000,
                         description="Samples kept for charts (× history_interval = the span; 240 × 15 s = 1 h).")
    history_interval: float = Field(15.0, ge=1, le=3600,
                                    description="Seconds between history samples (taken at snapshot builds).")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    mapping: NodeMapping = Field(default_factory=NodeMapping)
