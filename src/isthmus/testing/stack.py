"""A real bridge and edge as subprocesses on 127.0.0.1, for tests and benchmarks.

    with Stack(plugins=["sysinfo"]) as s:
        client = s.client()
        ...

Ports are picked free; every wait is bounded; logs go to files under ``s.workdir``
and are printed when something fails to start.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from ..sdk.client import BridgeClient

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Call ``predicate`` until it returns something truthy; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last error
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:g} s" + (f" (last error: {last_exc})" if last_exc else ""))


class Stack:
    def __init__(self, plugins: list[str] | None = None, *, edge: str = "test",
                 env: dict[str, str] | None = None, config: dict[str, Any] | None = None,
                 bridge_plugins: list[str] | None = None, bridge_args: list[str] | None = None,
                 edge_args: list[str] | None = None, workdir: str | Path | None = None) -> None:
        self.plugins = plugins
        self.edge = edge
        self.env = env or {}
        self.config = config
        self.bridge_plugins = bridge_plugins
        self.bridge_args = bridge_args or []
        self.edge_args = edge_args or []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = Path(workdir) if workdir else None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = "ist_" + secrets.token_urlsafe(16)
        self.edge_token = secrets.token_urlsafe(16)
        self.bridge_proc: subprocess.Popen[bytes] | None = None
        self.edge_proc: subprocess.Popen[bytes] | None = None
        self._clients: list[BridgeClient] = []
        self._spawned: list[subprocess.Popen[bytes]] = []  # every process, also edges a test replaced

    # -- processes --------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        assert self.workdir is not None
        env = {**os.environ, **self.env}
        env.setdefault("XDG_STATE_HOME", str(self.workdir / "state"))
        env.setdefault("XDG_CONFIG_HOME", str(self.workdir / "xdg-config"))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _config_args(self) -> list[str]:
        if self.config is None:
            return []
        assert self.workdir is not None
        return ["--config", str(self.workdir / "isthmus.yaml")]

    def _spawn(self, args: list[str], log_name: str, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert self.workdir is not None
        log = open(self.workdir / log_name, "ab")
        proc = subprocess.Popen([sys.executable, "-m", "isthmus", *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**self._base_env(), **extra_env}, cwd=self.workdir,
                                start_new_session=True)
        self._spawned.append(proc)
        return proc

    def start_bridge(self) -> None:
        args = ["bridge", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                *self._config_args(), *self.bridge_args]
        if self.bridge_plugins:
            args += ["--plugins", ",".join(self.bridge_plugins)]
        self.bridge_proc = self._spawn(args, "bridge.log", {"ISTHMUS_ADMIN_TOKEN": self.admin_token,
                                                            "ISTHMUS_EDGE_TOKEN": self.edge_token})
        self._wait(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, "bridge up",
                   self.bridge_proc, "bridge.log")

    def start_edge(self, wait: bool = True, bridges: list[str] | None = None) -> None:
        """Start the edge (``bridges``: the ws:// URLs it may use, default this stack's bridge)."""
        urls = ",".join(bridges or [f"ws://127.0.0.1:{self.port}"])
        args = ["edge", "--bridge", urls, "--name", self.edge,
                "--log-level", "info", *self._config_args(), *self.edge_args]
        if self.plugins is not None:
            args += ["--plugins", ",".join(self.plugins)]
        self.edge_proc = self._spawn(args, "edge.log", {"ISTHMUS_EDGE_TOKEN": self.edge_token})
        if wait:
            self.wait_edge()

    def wait_edge(self, present: bool = True, timeout: float = START_TIMEOUT) -> None:
        def check() -> bool:
            edges = httpx.get(f"{self.url}/edge/list", params={"name": self.edge, "view": "summary"},
                              headers=self.headers, timeout=2).json()["edges"]
            return (self.edge in edges) == present

        self._wait(check, f"edge {self.edge} {'connected' if present else 'gone'}",
                   self.edge_proc if present else None, "edge.log", timeout)

    def _wait(self, predicate: Callable[[], Any], what: str, proc: subprocess.Popen[bytes] | None,
              log_name: str, timeout: float = START_TIMEOUT) -> None:
        def check() -> Any:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
            return predicate()

        try:
            poll_for(check, timeout, 0.05, what)
        except (TimeoutError, RuntimeError) as exc:
            assert self.workdir is not None
            log = (self.workdir / log_name).read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{what} failed: {exc}\n--- {log_name} ---\n{log}") from exc

    def kill_edge(self, sig: int = signal.SIGKILL) -> None:
        if self.edge_proc is not None and self.edge_proc.poll() is None:
            self.edge_proc.send_signal(sig)
            self.edge_proc.wait(timeout=15)

    def stop_edge(self) -> None:
        self.kill_edge(signal.SIGTERM)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def bridge_pid(self) -> int:
        assert self.bridge_proc is not None
        return self.bridge_proc.pid

    @property
    def edge_pid(self) -> int:
        assert self.edge_proc is not None
        return self.edge_proc.pid

    def client(self, token: str | None = None) -> BridgeClient:
        client = BridgeClient(url=self.url, token=token or self.admin_token)
        self._clients.append(client)
        return client

    def http(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.admin_token}"},
                            **kwargs)

    @property
    def tokens_file(self) -> Path:
        assert self.workdir is not None
        if self.config is not None:
            return self.workdir / "tokens.json"
        return self.workdir / "xdg-config" / "isthmus" / "tokens.json"

    def create_token(self, role: str, name: str | None = None, principal: str | None = None,
                     edge: str | None = None) -> str:
        """A token of ``role`` in the bridge's token file (picked up within a second)."""
        return self.create_token_entry(role, name, principal, edge)[0]

    def create_token_entry(self, role: str, name: str | None = None, principal: str | None = None,
                           edge: str | None = None) -> tuple[str, dict[str, Any]]:
        """Like ``create_token``, also returning the file entry (its ``id`` revokes it)."""
        from ..bridge.auth import create_token

        token, entry = create_token(self.tokens_file, role, name=name, edge=edge, principal=principal)
        time.sleep(1.05)  # the bridge re-reads the token file at most once a second
        return token, entry

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Stack:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="isthmus-stack-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            (self.workdir / "isthmus.yaml").write_text(yaml.safe_dump(self.config))
        try:
            self.start_bridge()
            self.start_edge()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the processes must go whatever happens here
                pass
        self._clients.clear()
        # edges first (one started again under a new name would otherwise reconnect forever)
        procs = [p for p in self._spawned if p is not self.bridge_proc] + [p for p in self._spawned
                                                                           if p is self.bridge_proc]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._spawned.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
