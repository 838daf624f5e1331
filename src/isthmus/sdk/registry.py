"""Where plugins are found: classes by key, entry points, import specs, instances.

A plugin that is not enabled is never imported: entry points are listed by name and
only the enabled ones are loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import PluginClient
    from .plugin import Plugin

ENTRY_POINT_GROUP = "isthmus.plugins"

# Every Plugin subclass that sets plugin_name (or plugin_id) lands here when its module
# is imported: "plugins auto-register by plugin_name" (seed 000).
plugin_classes: dict[str, type[Plugin]] = {}
# PluginClient subclasses by the plugin they speak to.
client_classes: dict[str, type[PluginClient]] = {}


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plugins by name, not imported."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def is_import_spec(spec: str) -> bool:
    return ":" in spec


def load_class(spec: str) -> type[Plugin]:
    """Import one plugin class from an entry-point name or a ``pkg.module:Class`` spec."""
    from .plugin import Plugin

    if is_import_spec(spec):
        module_name, _, qualname = spec.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    else:
        eps = entry_points()
        if spec not in eps:
            known = ", ".join(sorted(eps)) or "none"
            raise LookupError(f"no plugin named {spec!r} is installed (installed: {known})")
        obj = eps[spec].load()
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise TypeError(f"{spec} is not a subclass of isthmus.Plugin")
    return obj


def spec_key(spec: str) -> str:
    """The plugin id a spec stands for, without importing it when it is an entry point."""
    if is_import_spec(spec):
        return load_class(spec).key()
    return spec


def client_class_for(plugin_name: str) -> type[PluginClient] | None:
    """The client class for a plugin, importing the installed plugin's client module if needed."""
    if plugin_name in client_classes:
        return client_classes[plugin_name]
    ep = entry_points().get(plugin_name)
    if ep is not None:
        package = ep.value.partition(":")[0].rpartition(".")[0]
        for candidate in (f"{package}.client", ep.value.partition(":")[0]):
            try:
                importlib.import_module(candidate)
            except ImportError:
                continue
            if plugin_name in client_classes:
                break
    return client_classes.get(plugin_name)


class PluginRegistry:
    """Plugin instances by id (seed 003's ``registry.register`` / ``get_plugin``)."""

    def __init__(self) -> None:
        self._plugins: dict[str, Plugin] = {}

    def register(self, plugin: Plugin) -> Plugin:
        self._plugins[plugin.instance_name] = plugin
        return plugin

    def get_plugin(self, plugin_id: str) -> Plugin | None:
        return self._plugins.get(plugin_id)

    def unregister(self, plugin_id: str) -> None:
        self._plugins.pop(plugin_id, None)

    def all(self) -> list[Plugin]:
        return list(self._plugins.values())

    def __contains__(self, plugin_id: object) -> bool:
        return plugin_id in self._plugins


registry = PluginRegistry()
