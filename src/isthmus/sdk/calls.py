"""Plugins calling plugins on other edges: the one way, with a client call's principal and deadline.

A plugin reaches another edge's plugin with ``self.edge_calls`` (``EdgeCalls``):

    answer = await self.edge_calls.call("hpc1", "POST", "/psij/submit_job/" + sid, json=body)
    async with await self.edge_calls.request("hpc2", "GET", "/staging/download/" + sid,
                                             params={"path": p}, stream=True) as response:
        async for chunk in response.aiter_bytes(): ...

The call runs as ``principal`` (default: the principal of the request being served, so a
bridge-hosted plugin acting for a client has exactly that client's rights; background work
passes the principal it stored), within ``timeout`` seconds (default: the bridge's request
deadline), with the same limits and header policy as a client's request through the bridge.

Hosts provide the transport: on the bridge, calls go straight to the links of that bridge's own
edges; an edge another bridge holds (several bridges) is not relayed — the relay authenticates
with the caller's own token, which background work does not hold — so the call is an
``EdgeCallError`` 503 naming that bridge. On an edge, calls travel over the edge's own link to
the bridge, which forwards them only to that edge's children (``<edge>.<…>``, e.g. pilots).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson

from ..errors import PluginError
from ..types import Principal


class EdgeCallError(PluginError):
    """A call to another edge's plugin answered with an error status (``status``, ``detail``)."""

    def __init__(self, message: str, status: int, detail: Any = None) -> None:
        super().__init__(message, status)
        self.status = status  # also status_code, as every PluginError
        self.detail = detail


class EdgeResponse:
    """An answer from another edge: status and headers first, the body read or streamed after."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: AsyncIterator[bytes],
                 close: Any = None) -> None:
        self.status = status
        self.headers = headers
        self._body = body
        self._close = close

    def header(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == key), None)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            if chunk:
                yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def json(self) -> Any:
        return orjson.loads(await self.read())

    async def raise_for_status(self, what: str = "") -> None:
        """``EdgeCallError`` with the answer's ``detail`` for a status of 400 or more."""
        if self.status < 400:
            return
        raw = await self.read()
        try:
            body = orjson.loads(raw)
            detail = body.get("detail", body) if isinstance(body, dict) else body
        except orjson.JSONDecodeError:
            detail = raw[:500].decode("utf-8", "replace")
        raise EdgeCallError(f"{what + ': ' if what else ''}HTTP {self.status}: {detail}", self.status, detail)

    async def aclose(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            await close()

    async def __aenter__(self) -> EdgeResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class EdgeCalls(Protocol):
    """What a host gives its plugins as ``Plugin.edge_calls`` (see the module docstring)."""

    async def request(self, edge: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      json: Any = None, content: bytes | AsyncIterator[bytes] | None = None,
                      headers: Mapping[str, str] | None = None, principal: Principal | None = None,
                      timeout: float | None = None) -> EdgeResponse:
        """Send one request to ``/{edge}{path}`` (``path`` is ``/{plugin}/...``); the answer's body
        is streamed: read it, iterate it, or ``aclose`` it."""
        ...

    async def call(self, edge: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   json: Any = None, principal: Principal | None = None, timeout: float | None = None) -> Any:
        """``request`` for JSON: the decoded answer, or ``EdgeCallError`` for a status ≥ 400."""
        ...
