"""The job description clients send: PSI/J's JobSpec and JobAttributes, validated.

Every problem is reported at once (a 422 listing each field), not the first one only.
Text that reaches a batch script (names, paths, attributes, custom attributes, environment)
may not hold control characters: a newline there would be a new line of the script.
Numbers are finite and bounded: ``duration: 1e400`` is a 422, not a crash.
"""

from __future__ import annotations

import math
import re
import shlex
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ..jobpolicy import check_environment, check_text

CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]*\.[A-Za-z0-9_.-]+")
MAX_DURATION = 366 * 86400  # a year of walltime is beyond any site's limit; more is a mistake or an attack
MAX_COUNT = 10_000_000
MAX_MEMORY = 1 << 60  # bytes
# Scheduler options that choose which environment a job gets: Isthmus sets that (a clean one).
ENVIRONMENT_OPTIONS = {"slurm": ("export", "export-file", "get-user-env"), "pbs": ("V", "v"),
                       "lsf": ("env",)}

ScriptText = Annotated[str, AfterValidator(check_text)]


def _no_nul(value: str) -> str:
    """Arguments are shell-quoted by PSI/J (a newline stays inside its argument); NUL cannot be passed at all."""
    if "\x00" in value:
        raise ValueError("arguments cannot contain NUL characters")
    return value


def parse_duration(value: Any) -> int:
    """Seconds from an int, ``"HH:MM:SS"``, ``"D-HH:MM:SS"`` or ``"MM"``; finite, positive, at most a year."""
    if isinstance(value, bool):
        raise ValueError("duration must be seconds or HH:MM:SS")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"duration must be a finite number of seconds, not {value!r}")
        seconds = int(value) if abs(value) <= MAX_DURATION else (MAX_DURATION + 1 if value > 0 else 0)
    elif not re.fullmatch(r"(\d{1,9}-)?\d{1,12}(:\d{1,12}){0,2}", str(value).strip()):
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
    if seconds > MAX_DURATION:
        raise ValueError(f"duration must be at most {MAX_DURATION} seconds (366 days)")
    return seconds


def _environment_option(key: str) -> bool:
    """Is custom attribute ``key`` (``slurm.export``) a scheduler option that picks the job's environment?

    Long options may be abbreviated on the command line and in directives (``--exp``), so
    any prefix counts too.
    """
    scheduler, _, option = key.partition(".")
    for name in ENVIRONMENT_OPTIONS.get(scheduler, ()):
        if option == name or (len(name) > 1 and len(option) >= 2 and (name.startswith(option)
                                                                    or option.startswith(name))):
            return True
    return False


class Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_name: ScriptText | None = None
    account: ScriptText | None = None
    project_name: ScriptText | None = None
    reservation_id: ScriptText | None = None
    duration: int = Field(600, description="walltime in seconds (or HH:MM:SS)")
    node_count: int | None = Field(None, ge=1, le=MAX_COUNT)
    process_count: int | None = Field(None, ge=1, le=MAX_COUNT)
    processes_per_node: int | None = Field(None, ge=1, le=MAX_COUNT)
    cpu_cores_per_process: int | None = Field(None, ge=1, le=MAX_COUNT)
    gpu_cores_per_process: int | None = Field(None, ge=1, le=MAX_COUNT)
    exclusive_node_use: bool = False
    memory: int | None = Field(None, ge=1, le=MAX_MEMORY, description="bytes")
    custom_attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @field_validator("custom_attributes")
    @classmethod
    def _custom(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [repr(k) for k in value if not CUSTOM_KEY.fullmatch(k)]
        if bad:
            raise ValueError(f"custom attribute names look like 'slurm.constraint': {', '.join(bad)}")
        for key, item in value.items():
            if _environment_option(key):
                raise ValueError(f"custom attribute {key} would choose the job's environment; Isthmus gives "
                                 "jobs a clean one (see env_passthrough)")
            if isinstance(item, str):
                check_text(item, f"custom attribute {key}")
            elif isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"custom attribute {key} must be a finite number, not {item!r}")
        return value


class JobSpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    executable: ScriptText = Field(min_length=1)
    arguments: list[Annotated[str, AfterValidator(_no_nul)]] = Field(default_factory=list)
    name: ScriptText | None = Field(None, max_length=200)
    directory: ScriptText | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    inherit_environment: bool = Field(True, description="Start from the edge's allow-listed variables "
                                                        "(env_passthrough); false: only `environment`.")
    stdin_path: ScriptText | None = None
    stdout_path: ScriptText | None = None
    stderr_path: ScriptText | None = None
    launcher: ScriptText | None = None
    attributes: Attributes = Field(default_factory=Attributes)

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        """Names and values; which loader variables are allowed is the plugin's config (checked there)."""
        return check_environment(value, allowed_loader=["*"])

    def duration(self) -> timedelta:
        return timedelta(seconds=self.attributes.duration)
