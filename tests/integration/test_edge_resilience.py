"""A real edge against a hand-driven bridge: bad frames and slow plugins never stop it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from isthmus import Plugin
from isthmus.config import AppConfig
from isthmus.edge.service import EdgeService
from isthmus.runtime.host import PluginHost
from isthmus.wire import protocol as P


class PluginSlowTopology(Plugin):
    """Takes its time over every topology change, as a plugin doing I/O there might."""

    plugin_name = "slowtopo"

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.add_route_get("hello", self.hello)
        self.topologies = 0

    async def hello(self, request: Any) -> dict[str, Any]:
        return {"hello": "world"}

    async def on_topology_change(self, edges: dict[str, Any]) -> None:
        await asyncio.sleep(3)
        self.topologies += 1


async def _ask(ws: ServerConnection, rid: int, plugin: str) -> P.Frame:
    await ws.send(P.pack([{"t": P.REQUEST, "id": rid, "m": "GET", "p": f"/{plugin}/hello", "q": b"", "h": [],
                           "pr": ["admin", 3, "admin"], "dl": 5.0, "b": b""}]))
    while True:
        for frame in P.unpack(await asyncio.wait_for(ws.recv(), 5)):
            if frame["t"] == P.RESPONSE and frame["id"] == rid:
                return frame


@pytest.mark.asyncio
async def test_bad_frame_from_bridge_edge_reconnects_and_keeps_plugins() -> None:
    connections: list[str] = []
    served: asyncio.Queue[tuple[float, P.Frame]] = asyncio.Queue()

    async def bridge(ws: ServerConnection) -> None:
        hello = P.unpack(await ws.recv())[0]
        assert hello["t"] == P.HELLO and len(hello["plugins"]) == 1
        assert hello["watch"] is True  # its plugin overrides on_topology_change
        connections.append(hello.get("resume") or "first")
        if len(connections) == 1:
            await ws.send(P.pack([{"t": P.WELCOME, "version": 0, "max_body": 1 << 20, "key": "k1"}]))
            await ws.send(b"\xc1 this is not msgpack")  # a bad frame
            await ws.wait_closed()
            return
        await ws.send(P.pack([{"t": P.WELCOME, "version": 1, "max_body": 1 << 20, "key": "k2"},
                              {"t": P.TOPOLOGY, "v": 1, "full": True, "joined": {"x": {}}, "left": {}},
                              {"t": P.TOPOLOGY, "v": 2, "full": False, "joined": {"y": {}}, "left": {}}]))
        t0 = time.monotonic()
        answer = await _ask(ws, 1, next(iter(hello["plugins"])))  # while on_topology_change sleeps 3 s
        await served.put((time.monotonic() - t0, answer))
        await ws.wait_closed()

    async with serve(bridge, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        host = PluginHost(AppConfig(), ["tests.integration.test_edge_resilience:PluginSlowTopology"], name="e1")
        host.load()
        (pid,) = host.records
        assert not host.failed_plugin(pid)
        service = EdgeService(host, f"ws://127.0.0.1:{port}", "e1", "token")
        runner = asyncio.create_task(service.run())
        try:
            elapsed, answer = await asyncio.wait_for(served.get(), 20)
        finally:
            service.stop()
            await asyncio.wait_for(runner, 10)
    assert connections == ["first", "k1"]  # reconnected, and proved it was the same edge
    assert answer["st"] == 200 and orjson.loads(answer["b"]) == {"hello": "world"}
    assert elapsed < 1.5  # the slow on_topology_change did not hold up the request
    assert host.failed_plugin(pid) is None and host.records[pid].plugin is not None
    assert sorted(host.topology) == ["x", "y"]  # the snapshot and the delta after it
