"""`isthmus login` / `logout`, how commands find their bridge and token, and the login file's safety."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from isthmus.config import load_app_config
from isthmus.testing.stack import Stack, free_port

from .conftest import Run


def login_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "isthmus" / "login.json"


def test_login_then_commands_need_no_flags(demo: Stack, isthmus: Run, tmp_path: Path) -> None:
    done = isthmus("login", "--bridge", demo.url + "/", input=demo.admin_token + "\n")
    assert done.returncode == 0, done.stderr
    assert f"logged in to {demo.url} as " in done.stdout and "(admin)" in done.stdout
    path = login_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())
    assert saved["url"] == demo.url and saved["token"] == demo.admin_token and saved["role"] == "admin"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".login")]  # no temporary file left

    edges = isthmus("edges", "--json")
    assert edges.returncode == 0, edges.stderr
    assert [e["edge"] for e in json.loads(edges.stdout)["edges"]] == ["demo"]
    jobs = isthmus("jobs", "ls", "--json")
    assert jobs.returncode == 0 and json.loads(jobs.stdout)["errors"] == []

    out = isthmus("logout")
    assert out.returncode == 0 and str(path) in out.stdout and not path.exists()
    again = isthmus("edges")
    assert again.returncode == 2 and "no bridge configured: run `isthmus login --bridge URL`" in again.stderr
    assert isthmus("logout").stdout.strip() == "not logged in"


def test_cp_uses_the_login(demo: Stack, isthmus: Run, tmp_path: Path) -> None:
    assert isthmus("login", "--bridge", demo.url, input=demo.admin_token).returncode == 0
    local = tmp_path / "data.bin"
    local.write_bytes(os.urandom(100_000))
    remote = f"demo:/tmp/{tmp_path.name}-cli-cp.bin"
    up = isthmus("cp", str(local), remote)
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back.bin"
    down = isthmus("cp", remote, str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == local.read_bytes() and up.stdout.split()[-1] == down.stdout.split()[-1]
    Path(remote.partition(":")[2]).unlink()


def test_a_wrong_token_is_refused_and_not_stored(demo: Stack, isthmus: Run, tmp_path: Path) -> None:
    done = isthmus("login", "--bridge", demo.url, input="ist_not-a-real-token\n")
    assert done.returncode == 77
    assert "refused the token" in done.stderr and "isthmus login" in done.stderr
    assert not login_file(tmp_path).exists()
    empty = isthmus("login", "--bridge", demo.url, input="\n")
    assert empty.returncode == 2 and "no token read" in empty.stderr


def test_token_file_must_be_private(demo: Stack, isthmus: Run, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(demo.admin_token + "\n")
    secret.chmod(0o644)
    loose = isthmus("login", "--bridge", demo.url, "--token-file", str(secret))
    assert loose.returncode == 2 and f"chmod 600 {secret}" in loose.stderr
    secret.chmod(0o600)
    done = isthmus("login", "--bridge", demo.url, "--token-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert json.loads(login_file(tmp_path).read_text())["token"] == demo.admin_token


def test_a_readable_or_symlinked_login_file_is_refused(demo: Stack, isthmus: Run, tmp_path: Path) -> None:
    assert isthmus("login", "--bridge", demo.url, input=demo.admin_token).returncode == 0
    path = login_file(tmp_path)
    path.chmod(0o640)
    refused = isthmus("edges")
    assert refused.returncode == 2 and f"run `chmod 600 {path}`" in refused.stderr
    path.chmod(0o600)
    assert isthmus("edges").returncode == 0
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)
    linked = isthmus("edges")
    assert linked.returncode == 2 and "cannot read the login file" in linked.stderr


def test_stored_token_goes_only_to_its_own_bridge(demo: Stack, isthmus: Run) -> None:
    assert isthmus("login", "--bridge", demo.url, input=demo.admin_token).returncode == 0
    other = f"http://127.0.0.1:{free_port()}"
    elsewhere = isthmus("edges", env={"ISTHMUS_BRIDGE": other})
    assert elsewhere.returncode == 2  # refused before any connection: the stored token is not for that bridge
    assert f"no token for {other} (your login is for {demo.url})" in elsewhere.stderr
    flag = isthmus("edges", "--bridge", other, "--token", "ist_x")
    assert flag.returncode == 69 and "cannot connect" in flag.stderr and "bridge runs" in flag.stderr


def test_environment_overrides_and_the_older_name(demo: Stack, isthmus: Run) -> None:
    for variable in ("ISTHMUS_BRIDGE", "ISTHMUS_URL"):
        done = isthmus("edges", "--json", env={variable: demo.url, "ISTHMUS_TOKEN": demo.admin_token})
        assert done.returncode == 0, done.stderr
        assert "demo" in {e["edge"] for e in json.loads(done.stdout)["edges"]}
    wrong = isthmus("edges", env={"ISTHMUS_BRIDGE": demo.url, "ISTHMUS_TOKEN": "ist_wrong"})
    assert wrong.returncode == 77 and "refused the token" in wrong.stderr


def test_plain_http_to_another_host_is_refused(isthmus: Run) -> None:
    done = isthmus("login", "--bridge", "http://bridge.invalid", input="ist_x")
    assert done.returncode == 2 and "use https://" in done.stderr
    bad = isthmus("edges", "--bridge", "ftp://127.0.0.1", "--token", "t")
    assert bad.returncode == 2 and "bridge URL must look like" in bad.stderr


def test_isthmus_bridge_variable_leaves_the_bridge_config_alone(demo: Stack, isthmus: Run,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # the demo fixture's bridge and edge run with ISTHMUS_BRIDGE=http://127.0.0.1:1 in their environment
    assert demo.bridge_proc is not None and demo.bridge_proc.poll() is None
    monkeypatch.setenv("ISTHMUS_BRIDGE", "https://bridge.example.org")
    monkeypatch.setenv("ISTHMUS_BRIDGE__PORT", "8123")
    config = load_app_config(None)
    assert config.bridge.port == 8123 and config.bridge.host == "127.0.0.1"
    plugins = isthmus("plugins", env={"ISTHMUS_BRIDGE": "https://bridge.example.org"})
    assert plugins.returncode == 0 and "psij" in plugins.stdout


def test_shell_completion(isthmus: Run, tmp_path: Path) -> None:
    done = isthmus("--install-completion", "bash", env={"HOME": str(tmp_path), "SHELL": "/bin/bash"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".bash_completions" / "isthmus.sh").is_file()
    words = isthmus(env={"_ISTHMUS_COMPLETE": "complete_bash", "COMP_WORDS": "isthmus jobs s", "COMP_CWORD": "2"})
    assert words.stdout.split() == ["submit", "show"]
