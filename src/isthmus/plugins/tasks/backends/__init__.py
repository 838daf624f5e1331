"""Where task chunks run. Each backend runs one chunk per ``run_chunk`` call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Backend(ABC):
    name = "?"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire what the backend needs (pools, clients)."""

    @abstractmethod
    async def run_chunk(self, tasks: list[dict[str, Any]], tail: int) -> list[dict[str, Any]]:
        """Run ``tasks``; one result dict per task, in order."""

    @abstractmethod
    def parallelism(self) -> int:
        """How many chunks to keep in flight."""

    async def kill(self, uids: set[str]) -> int:
        """Best effort: stop running executables of these tasks; returns how many were stopped."""
        return 0

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything."""
