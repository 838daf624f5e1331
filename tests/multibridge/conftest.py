"""Shared by the several-bridges tests: a private redis-server per module, and waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from isthmus.testing.redis import RedisServer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture
def url(server: RedisServer) -> str:
    """The module's Redis, emptied for this test."""
    with redis.Redis.from_url(server.url) as db:
        db.flushall()
    return server.url


async def eventually(check: Callable[[], Any], timeout: float = 2.0, what: str = "") -> float:
    """Seconds until ``check()`` is true; fails after ``timeout``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - began
