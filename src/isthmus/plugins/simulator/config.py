"""Configuration of the simulator plugin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ...schedulers.simulated import MODES


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    rooms: int = Field(2, ge=1, le=20)
    racks_per_room: int = Field(6, ge=1, le=100)
    cpu_nodes_per_rack: int = Field(48, ge=1, le=200)
    gpu_racks_per_room: int = Field(1, ge=0, le=100)
    gpu_nodes_per_rack: int = Field(12, ge=1, le=100)
    mode: str = Field("full_ok", description=f"incident mode at start: {', '.join(MODES)}")
    tick_interval: float = Field(1.0, gt=0, description="Wall seconds between simulation steps.")
    speed: float = Field(1.0, gt=0, description="Simulated seconds per wall second.")
    workload: bool = Field(True, description="Generate a background workload of jobs.")
