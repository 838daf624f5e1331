"""Python client of the sysinfo plugin."""

from __future__ import annotations

from typing import Any, cast

from ...sdk.client import PluginClient


class SysinfoClient(PluginClient):
    plugin_name = "sysinfo"

    def info(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._get("info"))

    def homedir(self) -> str:
        return cast(str, self._get("homedir")["homedir"])

    def metrics(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"metrics/{self._require_sid()}"))
