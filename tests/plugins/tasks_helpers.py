"""Functions the task tests run on the edge (importable by name from worker processes)."""

from __future__ import annotations

import time


def square(x: int) -> int:
    return x * x


def boom(message: str) -> None:
    raise RuntimeError(message)


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"
