"""The ``slurm`` fixture: a real single-node Slurm (``isthmus.testing.slurm``), started once.

It never skips: without the Debian packages it fails and says to run ``make system-deps``
as root. Slurm is left running after the session (the next run reuses it in a second);
set ``ISTHMUS_SLURM_KEEP=0`` to stop it at the end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from isthmus.testing.slurm import SlurmHarnessError, SlurmInfo, down, up
from isthmus.testing.stack import poll_for


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmInfo]:
    try:
        info = up()
    except SlurmHarnessError as exc:
        pytest.fail(f"a real Slurm is needed: {exc}", pytrace=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(info.conf)
    yield info
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if os.environ.get("ISTHMUS_SLURM_KEEP") == "0":
        down()


@pytest.fixture
def sbatch(slurm: SlurmInfo) -> Iterator[Callable[..., str]]:
    """Submit a job with sbatch; every job it made is cancelled after the test."""
    made: list[str] = []

    def submit(*args: str) -> str:
        out = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", *args], capture_output=True, text=True,
                             check=True, env={**os.environ, **slurm.env}, timeout=30).stdout.strip()
        job_id = out.split(";")[0]
        made.append(job_id)
        return job_id

    yield submit
    if made:
        subprocess.run(["scancel", *made], capture_output=True, env={**os.environ, **slurm.env}, timeout=30)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    return poll_for(predicate, timeout, 0.2, what)
