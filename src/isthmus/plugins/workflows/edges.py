"""One workflow's way to its edges: its owner's principal on every call, one session per
edge plugin, and a bounded wait when an edge is gone instead of failing at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ...sdk.calls import EdgeCallError, EdgeCalls, EdgeResponse
from ...types import Principal

GONE = (404, 502, 503)  # with the edge missing from the topology: it went away
SESSION_LOST = ("register_session", "register a new session")


class StepFailed(Exception):
    """A step's attempt failed; the message says why (it is shown to the owner)."""


class EdgeGone(StepFailed):
    pass


class SessionLost(Exception):
    """The edge no longer knows a session the step made (an edge restart): submit again."""


def session_lost(exc: EdgeCallError) -> bool:
    return exc.status_code in (404, 410) and any(s in str(exc.detail) for s in SESSION_LOST)


class WorkflowEdges:
    def __init__(self, calls: EdgeCalls, principal: Principal, topology: Callable[[], Mapping[str, Any]],
                 edge_wait: float) -> None:
        self.calls = calls
        self.principal = principal
        self.topology = topology
        self.edge_wait = edge_wait
        self._sessions: dict[tuple[str, str], str] = {}

    async def wait_for(self, edge: str) -> None:
        """Return once ``edge`` is connected; ``EdgeGone`` after ``edge_wait`` seconds."""
        if edge in self.topology():
            return
        end = time.monotonic() + self.edge_wait
        while edge not in self.topology():
            if time.monotonic() > end:
                raise EdgeGone(f"edge {edge} has been gone for more than {self.edge_wait:g} s")
            await asyncio.sleep(1.0)

    async def request(self, edge: str, method: str, path: str, **kwargs: Any) -> EdgeResponse:
        while True:
            await self.wait_for(edge)
            try:
                return await self.calls.request(edge, method, path, principal=self.principal, **kwargs)
            except EdgeCallError as exc:
                if exc.status_code in GONE and edge not in self.topology():
                    continue  # it left under us: wait for it (bounded) and ask again
                raise

    async def call(self, edge: str, method: str, path: str, *, json: Any = None,
                   params: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
        """JSON in, JSON out; waits for a gone edge, like ``request``. Only calls that are safe
        to repeat are repeated (a submit is not: its handle is stored before it is followed)."""
        while True:
            await self.wait_for(edge)
            try:
                return await self.calls.call(edge, method, path, json=json, params=params,
                                             principal=self.principal, timeout=timeout)
            except EdgeCallError as exc:
                if exc.status_code in GONE and edge not in self.topology() and method == "GET":
                    continue
                raise

    async def new_session(self, edge: str, plugin: str, **args: Any) -> str:
        answer = await self.call(edge, "POST", f"/{plugin}/register_session", json=args)
        return str(answer["sid"])

    async def session(self, edge: str, plugin: str) -> str:
        key = (edge, plugin)
        if key not in self._sessions:
            self._sessions[key] = await self.new_session(edge, plugin)
        return self._sessions[key]

    async def plugin_call(self, edge: str, plugin: str, method: str, route: str, **kwargs: Any) -> Any:
        """``route`` with ``{sid}`` filled by this workflow's session (made again when lost)."""
        for again in (False, True):
            sid = await self.session(edge, plugin)
            try:
                return await self.call(edge, method, f"/{plugin}/{route.format(sid=sid)}", **kwargs)
            except EdgeCallError as exc:
                if again or not session_lost(exc):
                    raise
                self._sessions.pop((edge, plugin), None)
        raise AssertionError("unreachable")

    async def plugin_request(self, edge: str, plugin: str, method: str, route: str,
                             content: bytes | AsyncIterator[bytes] | None = None, **kwargs: Any) -> EdgeResponse:
        sid = await self.session(edge, plugin)
        return await self.request(edge, method, f"/{plugin}/{route.format(sid=sid)}", content=content, **kwargs)
