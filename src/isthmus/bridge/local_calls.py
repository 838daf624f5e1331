"""``EdgeCalls`` for plugins hosted in the bridge: calls go straight to the edge's link.

A call is built like one the proxy forwards for a client (``proxy.forward``): the same
``req`` frame, the principal of the request being served (or the one given), the bridge's
request deadline, bodies inline up to 256 KiB and streamed with credit beyond, the answer
streamed back chunk by chunk. So a bridge-hosted plugin acting for a client has exactly
that client's rights, and background work (a workflow) acts with the principal it stored.

Edges another bridge holds (several bridges, ``--redis``) are not relayed: the relay
authenticates with the caller's own token, which background work does not have. Such a call
is an ``EdgeCallError`` 503 naming the bridge that holds the edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from ..config import BridgeConfig
from ..logs import request_id
from ..runtime import peer_calls
from ..sdk.calls import EdgeCallError, EdgeResponse
from ..types import Principal
from .directory import EdgeDirectory
from .edges import EdgeLink, EdgeRegistry
from .proxy import HOP_BY_HOP, MAX_DEADLINE


class BridgeParts(Protocol):
    """What the calls use of ``bridge.app.Bridge`` (named here, so neither module imports the other)."""

    settings: BridgeConfig
    edges: EdgeRegistry
    directory: EdgeDirectory | None
    local_edge: EdgeLink | None


class LocalEdgeCalls:
    """The bridge's transport for ``Plugin.edge_calls`` (see ``isthmus.sdk.calls``)."""

    def __init__(self, bridge: BridgeParts) -> None:
        self.bridge = bridge

    def _link(self, edge: str) -> EdgeLink:
        if edge == "bridge":
            if self.bridge.local_edge is None:
                raise EdgeCallError("this bridge hosts no plugins", 404)
            return self.bridge.local_edge
        link = self.bridge.edges.get(edge)
        if link is not None:
            return link
        directory = self.bridge.directory
        holder = directory.holder(edge) if directory is not None else None
        if holder is not None:
            raise EdgeCallError(f"edge {edge!r} is connected to bridge {holder.bridge_id}, not to this one; "
                                "bridge-hosted plugins reach only this bridge's edges", 503)
        raise EdgeCallError(f"no edge named {edge!r} is connected", 404)

    async def request(self, edge: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      json: Any = None, content: bytes | AsyncIterator[bytes] | None = None,
                      headers: Mapping[str, str] | None = None, principal: Principal | None = None,
                      timeout: float | None = None) -> EdgeResponse:
        who = peer_calls.caller(principal, path)
        link = self._link(edge)
        link.requests += 1
        deadline = min(timeout if timeout and timeout > 0 else self.bridge.settings.request_timeout, MAX_DEADLINE)
        max_body = self.bridge.settings.max_body
        frame, body = peer_calls.request_frame(method, path, params, json, content, headers, who, max_body,
                                               drop=HOP_BY_HOP)
        rid = request_id.get()
        if rid:
            frame["x"] = rid
        return await peer_calls.send(link.peer, next(self.bridge.edges.ids), deadline, frame, body, max_body, edge)

    async def call(self, edge: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   json: Any = None, principal: Principal | None = None, timeout: float | None = None) -> Any:
        response = await self.request(edge, method, path, params=params, json=json, principal=principal,
                                      timeout=timeout)
        return await peer_calls.read_json(response, f"{method} /{edge}{path}")
