"""``EdgeCalls`` for plugins on an edge: calls to the edge's children, over the edge's own link.

The edge sends a ``req`` frame *to* the bridge (path ``/{child}/{plugin}/...``); the bridge
forwards it only to the edge's children, ``<edge>.<…>`` (``bridge/edge_calls.py``), and the
answer comes back as ``res`` (and ``chunk``) frames. Calls started here carry negative ids,
so they never collide with the bridge's calls on the same link.

It also gives the edge's plugins what starting a child needs without handing them the
edge's enrolment token: ``mint_child_token`` (``bridge/child_tokens.py``), the edge's name
and its bridge URLs.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..bridge.child_tokens import mint
from ..runtime import peer_calls
from ..sdk.calls import EdgeCallError, EdgeResponse
from ..types import Principal
from ..wire import protocol as P
from ..wire.call import Call, ServerCall
from ..wire.peer import Handler, Peer

DEFAULT_TIMEOUT = 60.0
MAX_DEADLINE = 3600.0


class BridgeLinkCalls:
    """The edge's transport for ``Plugin.edge_calls``: children only, through the bridge."""

    def __init__(self, edge_name: str, peer: Callable[[], Peer | None], token: str | None,
                 bridge_urls: list[str], max_body: Callable[[], int]) -> None:
        self.edge_name = edge_name
        self.bridge_urls = bridge_urls
        self._peer = peer
        self._token = token
        self._max_body = max_body
        self._ids = itertools.count(1)

    def mint_child_token(self, child: str, ttl: float) -> str:
        """A short-lived enrolment token for edge ``child`` (``<this edge>.<…>``) alone."""
        if not self._token:
            raise EdgeCallError("this edge has no enrolment token to vouch for a child with", 503)
        return mint(self._token, self.edge_name, child, ttl)

    @staticmethod
    def handlers(peer: Peer) -> dict[str, Handler]:
        """The asking side's frames on the edge's link (``cancel`` serves both roles)."""
        def on_response(frame: P.Frame) -> None:
            call = peer.calls.get(frame["id"])
            if isinstance(call, Call):
                call.on_response(frame)

        def on_cancel(frame: P.Frame) -> None:
            call = peer.calls.get(frame["id"])
            if isinstance(call, Call):
                call.on_cancel()
            elif isinstance(call, ServerCall):
                call.cancel()

        return {P.RESPONSE: on_response, P.CANCEL: on_cancel}

    async def request(self, edge: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      json: Any = None, content: bytes | AsyncIterator[bytes] | None = None,
                      headers: Mapping[str, str] | None = None, principal: Principal | None = None,
                      timeout: float | None = None) -> EdgeResponse:
        who = peer_calls.caller(principal, path)
        if not edge.startswith(self.edge_name + "."):
            raise EdgeCallError(f"edge {self.edge_name} may call only its children ({self.edge_name}.<…>), "
                                f"not {edge!r}", 403)
        peer = self._peer()
        if peer is None:
            raise EdgeCallError(f"edge {self.edge_name} is not connected to its bridge now; try again", 503)
        deadline = min(timeout if timeout and timeout > 0 else DEFAULT_TIMEOUT, MAX_DEADLINE)
        max_body = self._max_body()
        frame, body = peer_calls.request_frame(method, f"/{edge}{path}", params, json, content, headers, who,
                                               max_body)
        # the bridge answers 504 at the deadline; the second more covers the way back
        return await peer_calls.send(peer, -next(self._ids), deadline + 1.0, frame, body, max_body, edge)

    async def call(self, edge: str, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   json: Any = None, principal: Principal | None = None, timeout: float | None = None) -> Any:
        response = await self.request(edge, method, path, params=params, json=json, principal=principal,
                                      timeout=timeout)
        return await peer_calls.read_json(response, f"{method} /{edge}{path}")
