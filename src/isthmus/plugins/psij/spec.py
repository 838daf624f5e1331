"""The job description clients send: PSI/J's JobSpec and JobAttributes, validated.

Every problem is reported at once (a 422 listing each field), not the first one only.
"""

from __future__ import annotations

import re
import shlex
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

CUSTOM_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_.-]+$")


def parse_duration(value: Any) -> int:
    """Seconds from an int, ``"HH:MM:SS"``, ``"D-HH:MM:SS"`` or ``"MM"``."""
    if isinstance(value, bool):
        raise ValueError("duration must be seconds or HH:MM:SS")
    if isinstance(value, (int, float)):
        seconds = int(value)
    elif not re.match(r"^(\d+-)?\d+(:\d+){0,2}$", str(value).strip()):
        raise ValueError(f"duration must be seconds or [D-]HH:MM:SS, not {value!r}")
    else:
        text = str(value).strip()
        days = 0
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            parts = [0, parts[0], 0]
        elif len(parts) == 2:
            parts = [0, *parts]
        if len(parts) != 3:
            raise ValueError("duration must be seconds or HH:MM:SS")
        seconds = days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds


class Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_name: str | None = None
    account: str | None = None
    project_name: str | None = None
    reservation_id: str | None = None
    duration: int = Field(600, description="walltime in seconds (or HH:MM:SS)")
    node_count: int | None = Field(None, ge=1)
    process_count: int | None = Field(None, ge=1)
    processes_per_node: int | None = Field(None, ge=1)
    cpu_cores_per_process: int | None = Field(None, ge=1)
    gpu_cores_per_process: int | None = Field(None, ge=1)
    exclusive_node_use: bool = False
    memory: int | None = Field(None, ge=1, description="bytes")
    custom_attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @field_validator("custom_attributes")
    @classmethod
    def _custom(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if not CUSTOM_KEY.match(k)]
        if bad:
            raise ValueError(f"custom attribute names look like 'slurm.constraint': {', '.join(bad)}")
        return value


class JobSpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: str = Field(min_length=1)
    arguments: list[str] = Field(default_factory=list)
    name: str | None = Field(None, max_length=200)
    directory: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    inherit_environment: bool = True
    stdin_path: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    launcher: str | None = None
    attributes: Attributes = Field(default_factory=Attributes)

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
        if bad:
            raise ValueError(f"not valid environment variable names: {', '.join(bad)}")
        return value

    def duration(self) -> timedelta:
        return timedelta(seconds=self.attributes.duration)
