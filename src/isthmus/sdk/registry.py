"""Where plugins are found: installed entry points, listed by name without importing them.

A plugin that is not enabled is never imported: entry points are listed by name and only
the enabled ones are loaded. The class tables live beside their classes (``plugin.py``,
``client.py``), so this module imports neither.
"""

from __future__ import annotations

import importlib.metadata

ENTRY_POINT_GROUP = "isthmus.plugins"


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plugins by name, not imported."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def is_import_spec(spec: str) -> bool:
    return ":" in spec
