"""Configuration with real processes: env overrides of the bridge section, SIGHUP reloads of the
bridge's and the demo's plugins, and a config PUT that the environment must not mask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from isthmus.testing.stack import Stack, free_port, poll_for
from tests.conftest import SUPPORT, support_env

SITE = SUPPORT / "site"
OTHER_BUILTINS = ("queue_info", "psij", "tasks", "staging", "cluster", "simulator")
ENV_SIZE = 45  # ISTHMUS_PLUGINS__FAKE__SIZE in every process of these tests
ENV_MAX_BODY = 4096  # ISTHMUS_BRIDGE__MAX_BODY; the file says more


def _env(**extra: str) -> dict[str, str]:
    env = support_env(ISTHMUS_PLUGINS__FAKE__SIZE=str(ENV_SIZE), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), env["PYTHONPATH"]])
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An edge 'test' and the bridge both hosting the third-party 'fake' plugin, sharing one config dir."""
    workdir = tmp_path_factory.mktemp("config-reload")
    config = {"bridge": {"max_body": 1024 * 1024},
              "plugins": {"fake": {"enabled": True, "color": "blue"}, "afake": {"enabled": False},
                          **{name: {"enabled": False} for name in OTHER_BUILTINS}}}
    env = _env(ISTHMUS_BRIDGE__MAX_BODY=str(ENV_MAX_BODY))
    with Stack(plugins=None, env=env, config=config, workdir=workdir, bridge_plugins=["fake"]) as s:
        yield s


def _dedicated(stack: Stack) -> Path:
    assert stack.workdir is not None
    path = stack.workdir / "plugins" / "fake" / "plugin.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("where", ["test", "bridge"], ids=["edge", "bridge-hosted"])
def test_put_config_invalid_value_is_refused_even_when_env_overrides_it(stack: Stack, where: str) -> None:
    dedicated = _dedicated(stack)
    original = b"# kept by hand\ncolor: blue   # not rewritten by a refused PUT\n"
    dedicated.write_bytes(original)
    url = f"/{where}/_edge/plugins/fake/config"
    with stack.http() as http:
        assert http.get(url).json()["sources"]["size"] == "env"
        bad = http.put(url, json={"size": "not a number", "color": "red"})
        assert bad.status_code == 422, bad.text
        detail = bad.json()["detail"]
        assert detail["key"] == "size" and "plugin.yaml" in detail["message"], detail
        assert dedicated.read_bytes() == original, "a refused PUT leaves the file byte for byte"
        nested = http.put(url, json={"size": {"deep": 1}})
        assert nested.status_code == 422 and nested.json()["detail"]["key"] == "size"
        assert dedicated.read_bytes() == original
        got = http.get(url).json()
        assert got["values"]["size"] == ENV_SIZE and got["values"]["color"] == "blue"

        good = http.put(url, json={"size": 3, "color": "green"})
        assert good.status_code == 200, good.text
        assert good.json()["values"]["size"] == ENV_SIZE, "the environment still wins over the file"
        assert good.json()["values"]["color"] == "green"
        assert yaml.safe_load(dedicated.read_text()) == {"size": 3, "color": "green"}
    dedicated.write_bytes(original)


def test_env_overrides_the_bridge_section_of_the_file(stack: Stack) -> None:
    with stack.http(timeout=30) as http:
        big = http.put("/test/_edge/plugins/fake/config", content=b"x" * (ENV_MAX_BODY + 1),
                       headers={"content-type": "application/json"})
        assert big.status_code == 413, big.text
        small = http.put("/test/_edge/plugins/fake/config", content=b"[" + b" " * 1000 + b"]",
                         headers={"content-type": "application/json"})
        assert small.status_code == 422, "under the limit the edge answers"


def test_bridge_reloads_its_plugins_on_sighup(stack: Stack) -> None:
    dedicated = _dedicated(stack)
    url = "/bridge/_edge/plugins/fake/config"
    with stack.http() as http:
        dedicated.write_text("color: violet\n")
        time.sleep(1.0)
        assert http.get(url).json()["values"]["color"] != "violet", "the bridge does not watch files"
        os.kill(stack.bridge_pid, signal.SIGHUP)
        poll_for(lambda: http.get(url).json()["values"]["color"] == "violet", 15, what="bridge SIGHUP reload")
        assert http.get(url).json()["sources"]["color"].endswith("plugins/fake/plugin.yaml")
        assert http.get("/bridge/fake/settings").json()["color"] == "violet"

        dedicated.write_text("color: [not, a, string]\n")
        os.kill(stack.bridge_pid, signal.SIGHUP)
        time.sleep(1.0)
        assert http.get(url).json()["values"]["color"] == "violet", "a bad file on reload: the old config stays"
        assert stack.bridge_proc is not None and stack.bridge_proc.poll() is None
    dedicated.write_text("color: blue\n")


def test_bridge_survives_sighup_without_plugins(tmp_path: Path) -> None:
    with Stack(plugins=["sysinfo"], workdir=tmp_path / "w") as s, s.http() as http:
        os.kill(s.bridge_pid, signal.SIGHUP)
        time.sleep(0.5)
        assert s.bridge_proc is not None and s.bridge_proc.poll() is None
        assert http.get("/edge/list").status_code == 200


def test_unknown_bridge_key_stops_the_bridge_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "isthmus.yaml"
    config.write_text("bridge:\n  request_timeout: 5\n  max_bodyy: 10\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_STATE_HOME": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, "-m", "isthmus", "bridge", "--port", str(free_port()),
                          "--config", str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"file {config}" in out.stderr and "key bridge.max_bodyy: unknown key" in out.stderr
    assert "max_body" in out.stderr.split("known:", 1)[1], "the known keys are listed"


# -- the demo -----------------------------------------------------------------------------------

def test_demo_reloads_on_sighup(tmp_path: Path) -> None:
    port = free_port()
    token = "ist_demo-sighup-test-token"
    config = tmp_path / "isthmus.yaml"
    config.write_text(yaml.safe_dump({"plugins": {"fake": {"enabled": True, "color": "blue"},
                                                  "afake": {"enabled": False},
                                                  **{name: {"enabled": False} for name in OTHER_BUILTINS
                                                     if name != "simulator"}}}))
    dedicated = tmp_path / "plugins" / "fake" / "plugin.yaml"
    dedicated.parent.mkdir(parents=True)
    env = {**os.environ, **_env(), "ISTHMUS_ADMIN_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "demo.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "isthmus", "demo", "--port", str(port),
                                 "--config", str(config), "--log-level", "info"],
                                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = "/demo/_edge/plugins/fake/config"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=5) as http:
            def up() -> bool:
                assert proc.poll() is None, (tmp_path / "demo.log").read_text()
                return http.get(url).status_code == 200

            poll_for(up, 60, 0.1, what="demo up with its edge")
            assert http.get(url).json()["values"]["color"] == "blue"
            dedicated.write_text("color: orange\n")
            os.kill(proc.pid, signal.SIGHUP)
            poll_for(lambda: http.get(url).json()["values"]["color"] == "orange", 15, what="demo SIGHUP reload")
            got = http.get(url).json()
            assert got["sources"]["color"].endswith("plugins/fake/plugin.yaml")
            assert got["values"]["size"] == ENV_SIZE and got["sources"]["size"] == "env"
            assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
