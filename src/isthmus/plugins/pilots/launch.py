"""What a pilot job runs: wait for its name and child token, then become ``isthmus edge``.

    python -m isthmus.plugins.pilots.launch <pilot directory>

The child's name (``<edge>.<pool>.<jobid>``) is known only once the batch system gave the job
its id, so the parent edge writes ``name`` and the mode-600 ``token`` file after submission;
this waits for them (at most ``WAIT`` seconds), then execs the edge with ``--token-file``.
The parent deletes the token file as soon as the child has connected, before any task runs.
A pool with ``dask`` on has a ``dask.json`` here: the pilot's Dask cluster (``daskcluster``)
starts first, meanwhile, and the edge only once every worker has joined, with its tasks
plugin pointed at that scheduler.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import daskcluster

WAIT = 300.0
DASK_WAIT = 300.0  # seconds for the pilot's Dask workers to join (srun may wait for its step)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m isthmus.plugins.pilots.launch <pilot directory>", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    token, name = directory / "token", directory / "name"
    print(f"pilot: launched at {time.time():.3f}", file=sys.stderr, flush=True)
    cluster = daskcluster.start(directory) if (directory / daskcluster.OPTIONS).exists() else None
    deadline = time.monotonic() + WAIT
    while not (token.exists() and name.exists()):
        if time.monotonic() > deadline:
            print(f"pilot: no child token in {directory} after {WAIT:g} s; the parent edge did not vouch for "
                  "this job (is it running?)", file=sys.stderr)
            if cluster is not None:
                cluster.stop()
            return 3
        time.sleep(0.2)
    if cluster is not None:
        try:
            address = cluster.wait(DASK_WAIT)
        except RuntimeError as exc:
            print(f"pilot: {exc}", file=sys.stderr)
            cluster.stop()
            return 4
        daskcluster.configure_child(directory / "isthmus.yaml", address)
        print(f"pilot: Dask scheduler {address} at {time.time():.3f}", file=sys.stderr, flush=True)
    launch = json.loads((directory / "launch.json").read_text())
    args = [*launch["argv"], "--name", name.read_text().strip(), "--token-file", str(token)]
    print(f"pilot: starting {name.read_text().strip()} at {time.time():.3f}", file=sys.stderr, flush=True)
    os.execv(args[0], args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
