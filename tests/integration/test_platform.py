"""The plugin platform with a third-party package installed through entry points."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from isthmus.testing.stack import Stack, poll_for
from tests.conftest import SUPPORT, support_env

SITE = SUPPORT / "site"
OTHER_BUILTINS = ("queue_info", "psij", "tasks", "staging", "cluster", "simulator")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("platform")
    log = tmp / "lifecycle.log"
    marker = tmp / "disabled-imported"
    config = {"plugins": {"fake": {"enabled": True, "color": "blue", "size": 1},
                          "afake": {"enabled": True},
                          "fakeoff": {"enabled": False},
                          **{name: {"enabled": False} for name in OTHER_BUILTINS}}}
    workdir = tmp / "work"
    (workdir / "plugins" / "fake").mkdir(parents=True)
    (workdir / "plugins" / "fake" / "plugin.yaml").write_text("size: 2\n")
    env = support_env(FAKE_LIFECYCLE_LOG=str(log), FAKE_DISABLED_MARKER=str(marker),
                      ISTHMUS_PLUGINS__FAKE__LIMIT="7")
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), env["PYTHONPATH"]])
    with Stack(plugins=None, env=env, config=config, workdir=workdir) as stack:
        stack.log = log  # type: ignore[attr-defined]
        stack.marker = marker  # type: ignore[attr-defined]
        yield stack


def test_discovery_and_disabled_plugin_never_imported(platform: Stack) -> None:
    plugins = platform.client().list_edges()["test"]["plugins"]
    assert {"sysinfo", "fake", "afake"} <= set(plugins)
    assert "fakeoff" not in plugins and not set(OTHER_BUILTINS) & set(plugins)
    assert not platform.marker.exists(), "a disabled plugin's module must not be imported"  # type: ignore[attr-defined]
    with platform.http() as http:
        assert http.get("/test/fakeoff/version").status_code == 404
        listed = [p["id"] for p in http.get("/test/_edge/plugins").json()["plugins"]]
        assert "fakeoff" not in listed and "fake" in listed
        assert http.get("/test/_edge/plugins/fakeoff/config").status_code == 404


def test_config_chain_and_sources(platform: Stack) -> None:
    with platform.http() as http:
        got = http.get("/test/_edge/plugins/fake/config").json()
        assert got["values"] == {"color": "blue", "size": 2, "limit": 7, "show_menu": True}
        assert got["sources"]["color"].endswith("isthmus.yaml")
        assert got["sources"]["size"].endswith("plugins/fake/plugin.yaml")
        assert got["sources"]["limit"] == "env"
        assert got["sources"]["show_menu"] == "default"
        assert got["schema"]["properties"]["size"]["type"] == "integer"
        assert http.get("/test/fake/settings").json()["size"] == 2


def test_menu_merged_and_ordered(platform: Stack) -> None:
    with platform.http() as http:
        sections = http.get("/menu").json()["sections"]
    ids = [s["id"] for s in sections]
    assert ids.index("sysinfo") < ids.index("afake") < ids.index("fake")
    assert [s["order"] for s in sections] == sorted(s["order"] for s in sections)
    assert all(s["edge"] == "test" for s in sections)


def test_put_config_validates_writes_and_reloads(platform: Stack) -> None:
    user = platform.create_token("user", "ulla")
    with platform.http(user) as http:
        assert http.put("/test/_edge/plugins/fake/config", json={"size": 3}).status_code == 403
    with platform.http() as http:
        bad = http.put("/test/_edge/plugins/fake/config", json={"size": "big"})
        assert bad.status_code == 422
        assert bad.json()["detail"]["key"] == "size" and "plugin.yaml" in bad.json()["detail"]["message"]
        unknown = http.put("/test/_edge/plugins/fake/config", json={"colour": "x"})
        assert unknown.status_code == 422 and "colour" in unknown.json()["detail"]["message"]
        assert platform.workdir is not None
        dedicated = platform.workdir / "plugins" / "fake" / "plugin.yaml"
        before = dedicated.read_bytes()
        masked = http.put("/test/_edge/plugins/fake/config", json={"limit": "x"})  # the env sets limit
        assert masked.status_code == 422 and masked.json()["detail"]["key"] == "limit", masked.text
        assert dedicated.read_bytes() == before, "a refused config is not written"
        assert http.get("/test/fake/settings").json()["size"] == 2, "a rejected config changes nothing"
        good = http.put("/test/_edge/plugins/fake/config", json={"size": 5, "show_menu": False}).json()
        assert good["values"]["size"] == 5 and good["reload"] == "reloaded"
        assert http.get("/test/fake/settings").json()["size"] == 5
        written = yaml.safe_load(dedicated.read_text())
        assert written == {"size": 5, "show_menu": False}
        poll_for(lambda: "fake" not in [s["id"] for s in http.get("/menu").json()["sections"]], 10,
                 what="menu follows the reloaded config")
    assert "reload fake size=5" in platform.log.read_text()  # type: ignore[attr-defined]


def test_file_change_and_sighup_reload(platform: Stack) -> None:
    assert platform.workdir is not None
    dedicated = platform.workdir / "plugins" / "fake" / "plugin.yaml"
    with platform.http() as http:
        dedicated.write_text("size: 8\n")
        poll_for(lambda: http.get("/test/fake/settings").json()["size"] == 8, 15, what="watched-file reload")
        dedicated.write_text("size: [not, an, int]\n")
        time.sleep(1.5)
        assert http.get("/test/fake/settings").json()["size"] == 8, "bad file on reload: old config stays"
        dedicated.write_text("size: 9\n")
        os.kill(platform.edge_pid, signal.SIGHUP)
        poll_for(lambda: http.get("/test/fake/settings").json()["size"] == 9, 15, what="SIGHUP reload")


def test_lifecycle_order_and_shutdown(platform: Stack) -> None:
    lines = platform.log.read_text().splitlines()  # type: ignore[attr-defined]
    starts = [line for line in lines if line.startswith("startup")]
    assert starts == ["startup fake", "startup afake"], "afake requires fake"
    with platform.http() as http:
        sid = http.post("/test/fake/register_session").json()["sid"]
        http.post("/test/_edge/reload")
        assert sid in http.get("/test/fake/list_sessions").json()["sessions"], "reload keeps sessions"
    platform.stop_edge()
    stops = [line for line in platform.log.read_text().splitlines() if line.startswith("shutdown")]  # type: ignore[attr-defined]
    assert stops == ["shutdown afake", "shutdown fake"]


def test_bad_config_at_startup_stops_only_that_plugin(tmp_path: Path) -> None:
    config = {"plugins": {"fake": {"enabled": True, "colour": "typo"},
                          **{name: {"enabled": False} for name in OTHER_BUILTINS}}}
    env = support_env()
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), env["PYTHONPATH"]])
    with Stack(plugins=None, env=env, config=config, workdir=tmp_path / "w") as s:
        plugins = s.client().list_edges()["test"]["plugins"]
        error = plugins["fake"]["error"]
        assert "isthmus.yaml" in error and "colour" in error
        with s.http() as http:
            assert http.get("/test/fake/version").status_code == 503
            assert http.get("/test/sysinfo/version").status_code == 200


def test_isthmus_plugins_command_lists_without_importing(tmp_path: Path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(SITE), "FAKE_DISABLED_MARKER": str(marker)}
    out = subprocess.run([sys.executable, "-m", "isthmus", "plugins"], env=env, capture_output=True,
                         text=True, cwd=tmp_path, timeout=60).stdout
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines()}
    assert rows["sysinfo"] == "enabled" and rows["fakeoff"] == "disabled" and rows["fake"] == "disabled"
    assert not marker.exists()


def test_plugin_modules_only_from_installed_plugins(platform: Stack) -> None:
    import httpx

    resp = httpx.get(f"{platform.url}/static/plugins/fake.js")  # the Explorer loads it before login
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    assert "export function init" in resp.text
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    assert httpx.get(f"{platform.url}/static/plugins/not-installed.js").status_code == 404
    assert httpx.get(f"{platform.url}/static/plugins/..%2F..%2Fetc%2Fpasswd.js").status_code == 404
    assert httpx.get(f"{platform.url}/static/plugins/sysinfo.js").status_code == 200  # a built-in's module
    assert httpx.get(f"{platform.url}/static/plugins/tasks.js").status_code == 404  # installed, no ui.js
