"""A demo-like edge (simulated cluster, psij, tasks) behind a real bridge, and the real ``isthmus`` script.

The stack's processes run with ``ISTHMUS_BRIDGE`` set to a URL: the client variable must not
disturb ``isthmus bridge``, ``isthmus edge`` or their config loading.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from isthmus.testing.stack import Stack
from tests.slurm.conftest import slurm  # noqa: F401 - the real Slurm, for test_slurm_cli.py

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))  # the installed console script
DEMO_CONFIG = {
    "scheduler": "simulated",
    "plugins": {"simulator": {"enabled": True}, "staging": {"roots": ["/tmp"]},
                "psij": {"allow_any_executable": True}, "tasks": {"allow_any_executable": True}},
}
CLIENT_VARS = ("ISTHMUS_BRIDGE", "ISTHMUS_URL", "ISTHMUS_TOKEN", "ISTHMUS_ADMIN_TOKEN", "ISTHMUS_TOKEN_FILE")

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(plugins=None, edge="demo", config=DEMO_CONFIG, workdir=tmp_path_factory.mktemp("cli"),
               env={"ISTHMUS_BRIDGE": "http://127.0.0.1:1"}) as stack:
        yield stack


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no Isthmus variables but ``extra``, a private XDG_CONFIG_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    return {**env, "XDG_CONFIG_HOME": str(home / "xdg"), "COLUMNS": "200", **extra}


@pytest.fixture
def isthmus(tmp_path: Path) -> Run:
    """Run the ``isthmus`` console script (bounded), as a user whose config lives under ``tmp_path``."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ISTHMUS, *args], capture_output=True, text=True, input=input, timeout=timeout,
                              env=client_env(tmp_path, **(env or {})), stdin=None if input is not None
                              else subprocess.DEVNULL)

    return run


@pytest.fixture
def as_admin(demo: Stack, isthmus: Run) -> Run:
    """``isthmus`` with the demo bridge and its admin token in the environment."""

    def run(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return isthmus(*args, env={"ISTHMUS_BRIDGE": demo.url, "ISTHMUS_TOKEN": demo.admin_token, **(env or {})},
                       **kwargs)

    return run
