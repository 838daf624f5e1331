"""What the pilots tests share (local pilots in tests/plugins, Slurm pilots in tests/slurm)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

import isthmus
from isthmus.plugins.pilots import daskcluster
from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack, poll_for

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(isthmus.__file__).resolve().parents[1]
# psij hands PYTHONPATH to pilot jobs, so they run this checkout's isthmus (not the one the venv
# has installed) and import the tests' functions by name: a test setting, not a production one.
SAME_CODE_PSIJ = {"allowed_directories": ["~", "/tmp"], "env_passthrough": ["PYTHONPATH"]}


def same_code_env(**extra: str) -> dict[str, str]:
    """The edge's environment for SAME_CODE_PSIJ: this checkout's src and the repository root first."""
    path = os.pathsep.join(p for p in (str(SRC), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **extra}


@contextlib.contextmanager
def local_pilots_stack(workdir: Path) -> Iterator[Stack]:
    """A bridge and edge ``test`` (psij, pilots) whose pilots are local processes of this checkout."""
    config = {"scheduler": "none", "plugins": {"psij": SAME_CODE_PSIJ, "pilots": {"tick": 0.2, "idle_timeout": 2}}}
    with Stack(plugins=["psij", "pilots"], config=config, env=same_code_env(), workdir=workdir) as stack:
        yield stack


def pilots_client(stack: Stack) -> Iterator[PilotsClient]:
    """A pilots client on edge ``test``; afterwards every pool still active is cancelled, so
    nothing a failed test made keeps running (with a fresh session: the edge may have restarted)."""
    yield stack.client().get_edge_client("test").get_plugin("pilots", PilotsClient)
    client = stack.client().get_edge_client("test").get_plugin("pilots", PilotsClient)
    for pool in client.list_pools():
        if pool["state"] == "ACTIVE":
            client.cancel_pool(pool["name"])
    # a pool is forgotten once its jobs ended; closing the stack before that would leave them running
    poll_for(lambda: not client.list_pools(), 120, 0.2, what="every pool's pilot jobs ended")


# -- pilots with Dask ---------------------------------------------------------------------------------


def pilot_directory(stack: Stack, job_id: str) -> Path:
    assert stack.workdir is not None
    (found,) = stack.workdir.glob(f"**/pilots/pilots/{job_id}")
    return found


def pilot_processes(directory: Path) -> list[psutil.Process]:
    """The pilot's child edge and Dask processes (scheduler, srun, nanny), with all their descendants."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(directory) in arg for arg in cmdline) and any(
                arg in ("isthmus.plugins.pilots.daskcluster", "edge") for arg in cmdline):
            roots.append(proc)
    found: dict[int, psutil.Process] = {}
    for root in roots:
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
    return list(found.values())


def _says_nothing(host: str, port: int, wrap: ssl.SSLContext | None) -> bool:
    """True when ``host:port`` answers neither plain HTTP nor (with ``wrap``) TLS without a client
    certificate: the connection is dropped or alerted, and no byte of an answer comes back."""
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            conn: socket.socket = wrap.wrap_socket(raw) if wrap is not None else raw
            conn.sendall(b"GET /info/main/workers.html HTTP/1.0\r\n\r\n")
            return conn.recv(64) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def assert_dask_locked(directory: Path, processes: list[psutil.Process]) -> str:
    """The pilot's Dask cluster takes only its own certificate; returns its scheduler's address.

    Key and certificate are mode 600 in the mode-700 pilot directory; the child edge's tasks
    plugin (and only its config) names the scheduler; a client with the pilot's certificate
    gets in, a plain ``tcp://`` one or one with another certificate does not; and every
    socket the Dask processes listen on refuses plain HTTP and certificate-less TLS (no
    dashboard, no /metrics, nothing unauthenticated). ``processes``: :func:`pilot_processes`."""
    from distributed import Client
    from distributed.security import Security

    address = (directory / daskcluster.READY).read_text().strip()
    assert address.startswith("tls://"), address
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in (daskcluster.KEY, daskcluster.CERT):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    tasks = yaml.safe_load((directory / "isthmus.yaml").read_text())["plugins"]["tasks"]
    assert tasks["backend"] == "dask" and tasks["dask_address"] == address
    assert tasks["dask_tls"] == daskcluster.tls_files(directory) and not tasks.get("dask_addresses")
    with Client(address, security=daskcluster.security(directory), timeout=30) as client:
        assert sum(client.nthreads().values()) >= 1  # the right certificate gets in
    for security, where in ((None, address.replace("tls://", "tcp://")), (Security.temporary(), address)):
        with pytest.raises(OSError):
            Client(where, security=security, timeout=10)
    host = address.removeprefix("tls://").rsplit(":", 1)[0]
    anonymous = ssl.create_default_context()
    anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
    dask = [p for p in processes if p.name() != "srun"]  # srun's own sockets are Slurm's (munge-authenticated)
    listening = {(c.laddr.ip, c.laddr.port) for p in dask for c in _connections(p) if c.status == "LISTEN"}
    ports = {port for _, port in listening}
    assert int(address.rsplit(":", 1)[1]) in ports and len(ports) >= 3  # the scheduler's, a nanny's, a worker's
    for ip, port in listening:
        target = host if ip in ("0.0.0.0", "::") else ip
        assert _says_nothing(target, port, None), (ip, port)
        assert _says_nothing(target, port, anonymous), (ip, port)
    return address


def _connections(proc: psutil.Process) -> list[psutil._common.pconn]:
    try:
        return proc.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
