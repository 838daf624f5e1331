"""The sysinfo plugin: what machine the edge runs on, and how busy it is."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import Request

from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from . import probe

INFO_TTL = 60.0


class SysinfoSession(PluginSession):
    """Sysinfo keeps no per-client state beyond liveness; sessions exist for the seed's shape."""

    async def metrics(self) -> dict[str, Any]:
        self._check_active()
        return await asyncio.to_thread(probe.metrics)


class PluginSysinfo(Plugin):
    plugin_name = "sysinfo"
    title = "System info"
    description = "Host, CPU, memory, disks, network, GPUs and shared filesystems of the edge."
    version = "0.1.0"
    ui_module = "ui.js"
    session_class = SysinfoSession
    ui_config = {
        "icon": "🖥",
        "title": "System info",
        "description": "Host, CPU, memory, disks, network, GPUs and shared filesystems.",
        "monitors": [{"id": "metrics", "title": "Utilisation", "type": "metrics",
                      "endpoint": "metrics/{sid}", "refresh": 2}],
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self._info: dict[str, Any] | None = None
        self._info_time = 0.0
        self._lock = asyncio.Lock()
        self.add_route_get("info", self.info)
        self.add_route_get("homedir", self.homedir)
        self.add_route_get("metrics/{sid}", self.metrics)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="sysinfo", label="System", icon="server", order=5,
                            items=[MenuItem(id="sysinfo-overview", label="System info", path="/sysinfo")])]

    async def info(self, request: Request) -> dict[str, Any]:
        """Static facts, cached for a minute (they hardly change, gathering them is not free)."""
        async with self._lock:
            if self._info is None or time.monotonic() - self._info_time > INFO_TTL:
                self._info = await asyncio.to_thread(probe.system_info)
                self._info_time = time.monotonic()
        return self._info

    async def homedir(self, request: Request) -> dict[str, Any]:
        return {"homedir": str(Path.home())}

    async def metrics(self, request: Request) -> Any:
        return await self._forward(request.path_params["sid"], SysinfoSession.metrics)
