"""A short-lived cache shared by all sessions, with one refresh in flight per key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SharedCache(Generic[V]):
    """``get(key, fetch)`` returns a fresh-enough value; concurrent misses share one fetch."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Hashable, tuple[float, V]] = {}
        self._inflight: dict[Hashable, asyncio.Future[V]] = {}
        self.fetches = 0

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[V]], force: bool = False) -> V:
        hit = self._values.get(key)
        if hit is not None and not force and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            self.fetches += 1
            value = await fetch()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            self._values[key] = (time.monotonic(), value)
            future.set_result(value)
            return value
        finally:
            self._inflight.pop(key, None)

    def clear(self) -> None:
        self._values.clear()
