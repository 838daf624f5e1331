"""The SDK's public face: exactly these names, each documented in the plugin guide."""

from __future__ import annotations

import inspect
from pathlib import Path

import isthmus
from isthmus import Plugin

GUIDE = (Path(__file__).parents[2] / "docs" / "plugin-guide.md").read_text()


def test_all_is_exactly_the_public_names() -> None:
    public = {n for n in dir(isthmus) if not n.startswith("_") and not inspect.ismodule(getattr(isthmus, n))}
    assert set(isthmus.__all__) - {"__version__"} == public


def test_every_plugin_hook_and_helper_is_documented() -> None:
    documented_private = ("_forward", "_create_session")
    names = [n for n, v in vars(Plugin).items()
             if callable(v) and not n.startswith("__") and (not n.startswith("_") or n in documented_private)
             and n not in ("attach", "mount_router", "manifest", "ui_module_path", "reap_sessions",
                           "close_all_sessions", "key", "display_title")]
    missing = [n for n in names if f"{n}" not in GUIDE]
    assert not missing, f"document these in docs/plugin-guide.md: {missing}"
    for attr in ("plugin_name", "plugin_id", "title", "version", "description", "session_class", "ui_config",
                 "ui_module", "config_model", "session_ttl", "requires"):
        assert attr in GUIDE, attr
