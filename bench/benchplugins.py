"""A plugin for the event benchmarks: publishes notifications as fast as it can."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from isthmus import Plugin


class PluginFlood(Plugin):
    plugin_name = "flood"
    description = "Benchmark helper: floods the event stream."

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.add_route_post("go", self.go)
        self.add_route_post("noop", self.noop)

    async def noop(self, request: Request) -> dict[str, Any]:
        """A state-changing call that does nothing: what the audit log costs per write."""
        return {"ok": True}

    async def go(self, request: Request) -> dict[str, Any]:
        n = int(request.query_params.get("n", "1000"))
        for i in range(n):
            self.notify("flood", {"i": i, "state": "RUNNING"})
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the writers run, as a real producer would
        return {"sent": n}
