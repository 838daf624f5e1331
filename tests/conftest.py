"""Shared fixtures: real bridge/edge stacks on loopback, with the test plugins importable."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus.testing.stack import Stack

SUPPORT = Path(__file__).parent / "support"
sys.path.insert(0, str(SUPPORT))


def support_env(**extra: str) -> dict[str, str]:
    """Environment that lets subprocess edges import the test plugins."""
    path = os.pathsep.join(p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def probe_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A bridge and an edge 'test' with sysinfo and the probe plugin; shared per module."""
    markers = tmp_path_factory.mktemp("markers")
    with Stack(plugins=["sysinfo", "testplugins:PluginProbe"],
               env=support_env(PROBE_MARKERS=str(markers))) as stack:
        stack.markers = markers  # type: ignore[attr-defined]
        yield stack
