"""Several real bridges sharing one real Redis, and one real edge that may use any of them.

    with Bridges(2, plugins=["sysinfo"]) as b:
        b.http(0).get("/edge/list")      # bridge A
        b.http(1).get("/test/sysinfo/")  # bridge B, relayed to A, which holds the edge
        b.kill_bridge(0)                 # kill -9: the edge moves to B

Each bridge is a ``Stack`` (same admin and enrolment tokens) started with ``--redis``; the
edge belongs to the first and is given every bridge's URL.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path
from typing import Any

import httpx

from .redis import RedisServer
from .stack import Stack


class Bridges:
    def __init__(self, count: int = 2, plugins: list[str] | None = None, *, edge: str = "test",
                 env: dict[str, str] | None = None, redis: RedisServer | None = None) -> None:
        self.redis = redis or RedisServer()
        self._own_redis = redis is None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.stacks: list[Stack] = []
        first: Stack | None = None
        for _ in range(count):
            stack = Stack(plugins, edge=edge, env=env, bridge_args=["--redis", self.redis.url])
            if first is None:
                first = stack
            else:
                stack.admin_token, stack.edge_token = first.admin_token, first.edge_token
            self.stacks.append(stack)

    @property
    def edge_stack(self) -> Stack:
        return self.stacks[0]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.stacks]

    @property
    def headers(self) -> dict[str, str]:
        return self.stacks[0].headers

    def http(self, i: int, token: str | None = None, **kwargs: Any) -> httpx.Client:
        return self.stacks[i].http(token, **kwargs)

    def start_bridge(self, i: int) -> None:
        self.stacks[i].start_bridge()

    def kill_bridge(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.stacks[i].bridge_proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=15)

    def start_edge(self) -> None:
        self.edge_stack.start_edge(bridges=[f"ws://127.0.0.1:{s.port}" for s in self.stacks])

    def __enter__(self) -> Bridges:
        self._tmp = tempfile.TemporaryDirectory(prefix="isthmus-bridges-")
        root = Path(self._tmp.name)
        try:
            if self._own_redis:
                self.redis.start()
            for i, stack in enumerate(self.stacks):
                stack.workdir = root / f"bridge{i}"
                stack.workdir.mkdir()
                stack.start_bridge()
            self.start_edge()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for stack in self.stacks:
            stack.close()
        if self._own_redis:
            self.redis.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
