"""FastAPI dependencies for plugin routes (seed 003: ``Depends(get_app_config)``, ``Depends(get_topology)``).

The host stores itself on its app's state; outside a host (a plain FastAPI app in a
unit test) they return an empty config and topology.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from ..config import AppConfig


def get_app_config(request: Request) -> AppConfig:
    host = getattr(request.app.state, "isthmus_host", None)
    return host.app_config if host is not None else AppConfig()


async def get_topology(request: Request) -> dict[str, Any]:
    """The bridge's view of edges and their plugins' summaries; the first use on an edge that
    does not watch the topology asks the bridge for it (and keeps it up to date after)."""
    host = getattr(request.app.state, "isthmus_host", None)
    if host is None:
        return {}
    edges: dict[str, Any] = await host.ensure_topology()
    return edges
