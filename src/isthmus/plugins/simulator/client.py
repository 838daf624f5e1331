"""Python client of the simulator plugin."""

from __future__ import annotations

from typing import Any, cast

from ...sdk.client import PluginClient


class SimulatorClient(PluginClient):
    plugin_name = "simulator"

    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._get("status"))

    def metrics(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._get("metrics"))

    def set_incident_mode(self, mode: str, counts: dict[str, int] | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self._post("set_incident_mode", json={"mode": mode, "counts": counts}))

    def incident(self, type: str, target: str, duration: float | None = 300) -> dict[str, Any]:
        return cast(dict[str, Any], self._post("incident", json={"type": type, "target": target, "duration": duration}))

    def incidents(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("incidents")["incidents"])

    def overrides(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("overrides")["overrides"])

    def add_override(self, target: str, key: str, value: Any, kind: str = "metric",
                     ttl: float | None = 600) -> dict[str, Any]:
        body = {"target": target, "kind": kind, "key": key, "value": value, "ttl": ttl}
        return cast(dict[str, Any], self._post("overrides", json=body))

    def delete_override(self, override_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._delete(f"overrides/{override_id}"))

    def clear_overrides(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._delete("overrides"))

    def restart(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._post("restart", json={}))

    def tick(self, seconds: float) -> dict[str, Any]:
        return cast(dict[str, Any], self._post("tick", json={"seconds": seconds}))
