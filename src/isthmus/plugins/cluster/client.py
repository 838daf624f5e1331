"""Python client of the cluster plugin (all reads are session-less)."""

from __future__ import annotations

from typing import Any, cast

from ...sdk.client import PluginClient


class ClusterClient(PluginClient):
    plugin_name = "cluster"

    def summary(self, room: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self._get("summary", room=room))

    def partitions(self, room: str | None = None) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("partitions", room=room)["partitions"])

    def nodes(self, room: str | None = None, state: str | None = None,
              partition: str | None = None) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("nodes", room=room, state=state, partition=partition)["nodes"])

    def node(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"node/{name}"))

    def rooms(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("rooms")["rooms"])

    def room(self, room_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"room/{room_id}"))

    def mapping(self, new: dict[str, Any] | None = None) -> dict[str, Any]:
        """The node mapping and unmatched names; with ``new``, replace it (admin)."""
        return cast(dict[str, Any], self._put("mapping", json=new) if new is not None else self._get("mapping"))

    def drain(self, name: str, reason: str) -> dict[str, Any]:
        """Drain a node (admin; schedulers that offer it); answers the node as it is now, with ``as_of``."""
        return cast(dict[str, Any], self._post(f"node/{name}/drain", json={"reason": reason}))

    def resume(self, name: str) -> dict[str, Any]:
        """Undo a drain made through Isthmus (admin); answers the node as it is now."""
        return cast(dict[str, Any], self._post(f"node/{name}/resume", json={}))

    def metrics_catalog(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("metrics_catalog")["metrics"])

    def metric(self, metric_id: str, scope: str = "cluster") -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"metric/{metric_id}", scope=scope))

    def history(self, metric: str | None = None, node: str | None = None, partition: str | None = None,
                room: str | None = None, since: float | None = None) -> dict[str, Any]:
        """Metrics over time as chart columns (``series``, ``data`` = [times, values...]); without
        ``metric``, what is kept. Scope: one of ``node``/``partition``/``room`` (names, commas, ``*``)."""
        return cast(dict[str, Any], self._get("history", metric=metric, node=node, partition=partition, room=room,
                                              since=since))
