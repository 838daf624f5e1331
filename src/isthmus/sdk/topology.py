"""The topology as its holders keep it: a full view once, then deltas applied in order.

A *summary* of an edge is what the bridge sends about it on every change — small and
independent of its plugins' UI::

    {"plugins": {"psij": {"title": "PSI/J jobs", "version": "1.0"}, ...},
     "host": "login1", "connected_at": 1732370000.0, "conn": "9f3c..."}

A *delta* says which edges joined (or changed their plugins) and which left::

    {"joined": {name: summary}, "left": {name: conn}}

``left`` names the connection that left, so a late "left" of an edge's previous connection
(another bridge's, or before a reconnect) never removes its newer one. Full manifests (menus,
``ui_config``) are only in ``GET /edge/list``.
"""

from __future__ import annotations

from typing import Any


def plugin_summary(manifests: dict[str, Any]) -> dict[str, Any]:
    """Each plugin's title and version from a full manifest map."""
    out: dict[str, Any] = {}
    for pid, manifest in manifests.items():
        if isinstance(manifest, dict):
            entry = {"title": manifest.get("title"), "version": manifest.get("version")}
            if manifest.get("error"):
                entry["error"] = manifest["error"]
            out[pid] = entry
        else:
            out[pid] = {}
    return out


class TopologyView:
    """Edges by name (summaries), kept from a snapshot and the deltas after it."""

    def __init__(self) -> None:
        self.edges: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.complete = False  # a full snapshot was applied

    def reset(self, edges: dict[str, Any], version: int = 0) -> None:
        self.edges = {name: info for name, info in edges.items() if isinstance(info, dict)}
        self.version = version
        self.complete = True

    def apply(self, delta: dict[str, Any]) -> bool:
        """Apply a delta (or, with ``full``, a snapshot); True when the view changed."""
        joined = delta.get("joined") or {}
        left = delta.get("left") or {}
        version = delta.get("v")
        if delta.get("full"):
            self.reset(joined, version if isinstance(version, int) else 0)
            return True
        changed = False
        if isinstance(left, list):  # names only: remove whatever connection is listed
            left = {name: None for name in left}
        for name, conn in left.items():
            current = self.edges.get(name)
            if current is not None and (conn is None or current.get("conn") in (None, conn)):
                del self.edges[name]
                changed = True
        for name, info in joined.items():
            if isinstance(info, dict):
                self.edges[name] = info
                changed = True
        if isinstance(version, int):
            self.version = version
        return changed
