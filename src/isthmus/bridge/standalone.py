"""The lifecycle of what a bridge may share with others through Redis (tokens, events).

The bridge starts, stops and reports on its token store, event bus and edge directory alike;
the in-memory ones inherit these no-ops, the Redis-backed subclasses override them.
"""

from __future__ import annotations


class Standalone:
    async def start(self) -> None:
        """Start background work (none when alone)."""

    async def stop(self) -> None:
        """Stop background work (none when alone)."""

    @property
    def healthy(self) -> bool:
        return True

    @property
    def problem(self) -> str | None:
        """Why it is not healthy (for /healthz), or None."""
        return None
