"""A plugin that must never be imported while disabled: importing it leaves a marker."""

from __future__ import annotations

import os
from pathlib import Path

from isthmus import Plugin

marker = os.environ.get("FAKE_DISABLED_MARKER")
if marker:
    Path(marker).write_text("imported")


class PluginOff(Plugin):
    plugin_name = "fakeoff"
