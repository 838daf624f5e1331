"""A pilot's own Dask cluster: the scheduler on its first node, one worker (a nanny) per node.

Why it is built like this: a Dask scheduler runs whatever code its clients send, as the
edge's account, so nothing here listens unauthenticated. The scheduler makes a certificate
for this pilot alone (``Security.temporary``) and writes it and its key mode 600 into the
pilot's private directory (mode 700); that certificate is the cluster's only CA, and every
connection (worker, nanny, the child edge's client) must present it: distributed's TLS
verifies both ends, and plain ``tcp://`` is refused. The HTTP servers distributed starts
beside them (dashboard, /metrics, /health, the proxy route) get no routes and are closed as
soon as they exist. The processes end with the pilot: the batch system ends its job steps,
and the launcher gives each process it starts a parent-death signal (the launcher becomes
the child edge, so they die with it).

    python -m isthmus.plugins.pilots.daskcluster scheduler <pilot directory> <workers>
    python -m isthmus.plugins.pilots.daskcluster worker <pilot directory> <threads> [interface]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...private_files import write_private
from ..tasks.worker import set_parent_death_signal

OPTIONS = "dask.json"  # written by the parent edge: {"threads": N, "interface": null}
KEY, CERT = "dask-key.pem", "dask-cert.pem"
SCHEDULER_FILE, READY = "dask-scheduler.json", "dask-ready"
NO_ROUTES: dict[str, list[str]] = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}


def tls_files(directory: Path) -> dict[str, str]:
    """The child edge's ``dask_tls`` (tasks plugin config): the pilot's certificate is also the CA."""
    return {"ca_file": str(directory / CERT), "cert": str(directory / CERT), "key": str(directory / KEY)}


def security(directory: Path) -> Any:
    """Mutual TLS for every role from the pilot's certificate files; encryption required."""
    from distributed.security import Security

    cert, key = str(directory / CERT), str(directory / KEY)
    return Security(require_encryption=True, tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key)


def _close_http(server: Any) -> None:
    """Stop the HTTP server distributed starts beside a scheduler or worker (no dashboard, nothing open)."""
    http = getattr(server, "http_server", None)
    if http is not None:
        http.stop()


def dask_setup(worker: Any) -> None:
    """Preload hook: runs in each worker process right after it started listening."""
    _close_http(worker)


async def _scheduler(directory: Path, workers: int, interface: str | None) -> None:
    import dask
    from distributed import Scheduler
    from distributed.security import Security
    from distributed.utils import get_ip

    temporary = Security.temporary()
    write_private(directory / KEY, temporary.tls_scheduler_key)
    write_private(directory / CERT, temporary.tls_scheduler_cert)
    with dask.config.set(NO_ROUTES):
        async with Scheduler(host=None if interface else get_ip(), interface=interface, port=0, protocol="tls",
                             security=security(directory), dashboard=False, dashboard_address="127.0.0.1:0",
                             scheduler_file=str(directory / SCHEDULER_FILE)) as scheduler:
            _close_http(scheduler)
            while len(scheduler.workers) < workers:
                await asyncio.sleep(0.2)
            write_private(directory / READY, scheduler.address)
            await scheduler.finished()


async def _worker(directory: Path, threads: int, interface: str | None) -> None:
    import dask
    from distributed import Nanny

    while not (directory / SCHEDULER_FILE).exists():  # written after the certificate: then both are there
        await asyncio.sleep(0.1)
    with dask.config.set(NO_ROUTES):
        async with Nanny(scheduler_file=str(directory / SCHEDULER_FILE), security=security(directory),
                         nthreads=threads, interface=interface, protocol="tls", dashboard=False,
                         dashboard_address="127.0.0.1:0", preload=[__name__], name=socket.gethostname()) as nanny:
            await nanny.finished()


# -- what the launcher calls --------------------------------------------------------------------


@dataclass
class Cluster:
    """The processes the launcher started; ``wait`` gives the scheduler's address once all workers are in."""

    directory: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def wait(self, timeout: float) -> str:
        ready = self.directory / READY
        deadline = time.monotonic() + timeout
        while not ready.exists():
            ended = [p for p in self.procs if p.poll() is not None]
            if ended or time.monotonic() > deadline:
                why = (f"its {'scheduler' if ended[0] is self.procs[0] else 'workers'} exited with "
                       f"{ended[0].returncode}" if ended else f"not every worker joined within {timeout:g} s")
                raise RuntimeError(f"the pilot's Dask cluster did not start: {why}; see {self.directory}/dask-*.log")
            time.sleep(0.2)
        return ready.read_text().strip()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()


def _die_with_parent() -> None:
    set_parent_death_signal(signal.SIGTERM)


def start(directory: Path) -> Cluster:
    """Start the scheduler here and one worker per node (``srun`` inside a Slurm job, else one here)."""
    options = json.loads((directory / OPTIONS).read_text())
    threads, interface = int(options["threads"]), options.get("interface") or None
    for name in (KEY, CERT, SCHEDULER_FILE, READY):
        (directory / name).unlink(missing_ok=True)
    me = [sys.executable, "-m", __name__]
    worker = [*me, "worker", str(directory), str(threads), *([interface] if interface else [])]
    nodes = 1
    if os.environ.get("SLURM_JOB_ID") and shutil.which("srun"):
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or 1)
        # --overlap: the step shares the allocation with the batch step (the child edge)
        worker = ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", *worker]
    cluster = Cluster(directory)
    for role, argv in (("scheduler", [*me, "scheduler", str(directory), str(nodes),
                                      *([interface] if interface else [])]), ("workers", worker)):
        with open(directory / f"dask-{role}.log", "ab") as log:
            cluster.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                  preexec_fn=_die_with_parent))  # the launcher has no threads
    return cluster


def configure_child(config: Path, address: str) -> None:
    """Point the child edge's tasks plugin at this pilot's scheduler (only this child's config names it)."""
    import yaml

    data = yaml.safe_load(config.read_text())
    data["plugins"]["tasks"]["dask_address"] = address
    config.write_text(yaml.safe_dump(data))


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("scheduler", "worker"):
        print(__doc__, file=sys.stderr)
        return 2
    directory, number, interface = Path(argv[1]), int(argv[2]), (argv[3] if len(argv) > 3 else None)
    run = _scheduler if argv[0] == "scheduler" else _worker
    asyncio.run(run(directory, number, interface))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
