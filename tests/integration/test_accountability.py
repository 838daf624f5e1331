"""Request ids, the audit log and rate limits on a real bridge and edge (issue #13)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus.testing.stack import Stack, poll_for
from tests.conftest import support_env

PLUGINS = ["sysinfo", "tasks", "staging", "testplugins:PluginProbe"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("accountability")
    config = {"state_dir": str(work / "state"), "tokens_file": str(work / "tokens.json"),
              "plugins": {"staging": {"roots": [str(work / "sandbox")]}}}
    (work / "sandbox").mkdir()
    with Stack(plugins=PLUGINS, env=support_env(), config=config, workdir=work,
               bridge_args=["--log-format", "json"], edge_args=["--log-format", "json"]) as s:
        yield s


def audit_lines(stack: Stack) -> list[dict[str, Any]]:
    assert stack.workdir is not None
    path = stack.workdir / "state" / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def isthmus(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    assert stack.workdir is not None
    return subprocess.run([sys.executable, "-m", "isthmus", *args, "--config", str(stack.workdir / "isthmus.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=stack.workdir)


def test_request_ids_reach_the_client_the_edge_and_its_log(stack: Stack) -> None:
    with stack.http() as http:
        r = http.get("/test/probe/request_id", headers={"X-Request-ID": "my-trace-42"})
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        assert len(rid) == 16 and rid != "my-trace-42", "a client's id is a label, never the request id"
        assert r.json()["request_id"] == rid, "plugins see the bridge's id in request.state.request_id"
        second = http.get("/test/probe/request_id").headers["x-request-id"]
        assert second != rid
        # bridge routes, refusals and unknown edges carry one too
        assert len(http.get("/edge/list").headers["x-request-id"]) == 16
        assert len(http.get("/nowhere/probe/x").headers["x-request-id"]) == 16
    assert len(httpx.get(f"{stack.url}/edge/list").headers["x-request-id"]) == 16  # 401
    assert stack.workdir is not None

    def logged() -> dict[str, Any] | None:
        for line in (stack.workdir / "edge.log").read_text().splitlines():  # type: ignore[operator]
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("message") == "probe saw this request" and entry.get("request_id") == rid:
                    return entry
        return None

    entry = poll_for(logged, 10, what="the edge's JSON log line with the request id")
    assert entry["logger"] == "testplugins.probe" and entry["level"] == "warning"


def test_audit_log_has_one_line_per_change_and_none_for_reads(stack: Stack) -> None:
    user = stack.create_token("user", name="alice")
    viewer = stack.create_token("viewer", name="vera")
    before = len(audit_lines(stack))
    expected: list[tuple[str, str, str, int]] = []  # (request id, action, method, status) in order

    def call(http: httpx.Client, method: str, path: str, audited: bool, **kwargs: Any) -> httpx.Response:
        r = http.request(method, path, **kwargs)
        if audited:
            expected.append((r.headers["x-request-id"], path, method, r.status_code))
        return r

    with stack.http(user) as http:
        call(http, "GET", "/edge/list", False)
        call(http, "POST", "/edge/list", False)
        call(http, "GET", "/test/sysinfo/version", False)
        sid = call(http, "POST", "/test/tasks/register_session", True, json={}).json()["sid"]
        uids = call(http, "POST", f"/test/tasks/submit_tasks/{sid}", True,
                    json={"tasks": [{"executable": "/bin/true"}]}).json()["uids"]
        call(http, "POST", f"/test/tasks/wait_tasks/{sid}", False, json={"uids": uids, "timeout": 20})
        call(http, "POST", f"/test/tasks/task_states/{sid}", False, json={"uids": uids})
        call(http, "GET", f"/test/tasks/list_tasks/{sid}", False)
        ssid = call(http, "POST", "/test/staging/register_session", True, json={}).json()["sid"]
        results = str(stack.workdir / "sandbox" / "results")  # type: ignore[operator]
        assert call(http, "POST", f"/test/staging/mkdir/{ssid}", True, json={"path": results}).status_code == 200
        assert call(http, "POST", f"/test/staging/remove/{ssid}", True, json={"path": results + "/"}).status_code == 200
        call(http, "GET", f"/test/staging/list/{ssid}", False, params={"path": str(Path(results).parent)})
        assert call(http, "POST", "/edge/disconnect/test", True).status_code == 403  # refused: not admin
    with stack.http(viewer) as http:
        assert call(http, "POST", "/test/probe/echo", True, content=b"x").status_code == 403
        call(http, "GET", "/test/sysinfo/version", False)
    with httpx.Client(base_url=stack.url) as anon:
        assert call(anon, "GET", "/edge/list", False).status_code == 401  # no credential: nobody to audit
        assert call(anon, "GET", "/edge/list", True, headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = call(anon, "POST", "/auth/login", True, json={"token": user})
        assert r.status_code == 200
        anon.cookies.set("isthmus_session", user)
        call(anon, "GET", "/auth/whoami", False)
        call(anon, "POST", "/auth/logout", True)

    lines = poll_for(lambda: (x := audit_lines(stack)[before:]) and len(x) >= len(expected) and x, 10,
                     what="audit lines")
    time.sleep(0.3)  # nothing more may arrive
    lines = audit_lines(stack)[before:]
    assert [(e["request_id"], e["path"], e["method"], e["status"]) for e in lines] == expected
    by_id = {e["request_id"]: e for e in lines}
    submit = by_id[expected[1][0]]
    assert submit["action"] == "tasks.submit_tasks" and submit["principal"].startswith("tok_")
    assert submit["name"] == "alice" and submit["role"] == "user" and submit["edge"] == "test"
    assert submit["plugin"] == "tasks" and submit["source"] == "127.0.0.1" and submit["bytes_in"] > 0
    assert by_id[expected[-4][0]]["action"] == "refused" and by_id[expected[-4][0]]["name"] == "vera"
    login, logout = by_id[expected[-2][0]], by_id[expected[-1][0]]
    assert login["action"] == "login" and login["name"] == "alice"
    assert logout["action"] == "logout" and logout["name"] == "alice"
    text = (stack.workdir / "state" / "audit.log").read_text()  # type: ignore[operator]
    assert user not in text and viewer not in text, "no token ever reaches the audit log"


def test_isthmus_audit_filters(stack: Stack) -> None:
    token = stack.create_token("user", name="bob")
    with stack.http(token) as http:
        rid = http.post("/test/probe/echo", content=b"hello").headers["x-request-id"]
        http.post("/edge/disconnect/nowhere")  # refused (403): no edge field of test
    everything = isthmus(stack, "audit", "--json")
    assert everything.returncode == 0, everything.stderr
    entries = [json.loads(line) for line in everything.stdout.splitlines()]
    bob = [e for e in entries if e["name"] == "bob"]
    assert bob[0]["request_id"] == rid
    mine = isthmus(stack, "audit", "--json", "--principal", "bob")
    assert [json.loads(x)["request_id"] for x in mine.stdout.splitlines()] == [e["request_id"] for e in bob]
    on_edge = [json.loads(x) for x in isthmus(stack, "audit", "--json", "--edge", "test").stdout.splitlines()]
    assert on_edge and all(e["edge"] == "test" for e in on_edge)
    assert rid in {e["request_id"] for e in on_edge}
    assert isthmus(stack, "audit", "--json", "--since", "2099-01-01T00:00:00Z").stdout == ""
    recent = isthmus(stack, "audit", "--since", "10m", "--principal", "bob")
    assert recent.returncode == 0 and rid in recent.stdout and "REQUEST_ID" in recent.stdout
    bad = isthmus(stack, "audit", "--since", "yesterday")
    assert bad.returncode == 2 and "--since takes" in bad.stderr


def test_token_commands_are_audited(stack: Stack) -> None:
    made = isthmus(stack, "token", "create", "--role", "viewer", "--name", "audited")
    assert made.returncode == 0, made.stderr
    entries = [json.loads(x) for x in isthmus(stack, "audit", "--json").stdout.splitlines()]
    created = [e for e in entries if e["action"] == "token.create"]
    assert created and created[-1]["principal"].startswith("local:")
    assert made.stdout.strip().splitlines()[0] not in json.dumps(created)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Stack]:
    config = {"bridge": {"rate_limit": 2, "rate_burst": 4, "login_failures": 3}, "state_dir": str(tmp_path / "state")}
    with Stack(plugins=["sysinfo"], config=config, workdir=tmp_path) as s:
        yield s


def test_rate_limit_answers_429_then_clears_after_retry_after(limited: Stack) -> None:
    with limited.http(limited.create_token("user")) as http:  # a fresh principal: a full bucket
        codes = [http.get("/edge/list").status_code for _ in range(6)]
        assert codes[:4] == [200] * 4 and 429 in codes[4:]
        refused = http.get("/edge/list")
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 2
        assert "rate limit" in refused.json()["detail"]
        time.sleep(wait)
        assert http.get("/edge/list").status_code == 200


def test_bad_tokens_are_throttled_per_address(limited: Stack) -> None:
    for _ in range(3):
        assert httpx.get(f"{limited.url}/edge/list", headers={"Authorization": "Bearer wrong"}).status_code == 401
    blocked = httpx.get(f"{limited.url}/edge/list", headers={"Authorization": "Bearer wrong"})
    assert blocked.status_code == 429 and "bad credentials" in blocked.json()["detail"]
    # while blocked, even a right token is not checked (that is what stops guessing)
    assert httpx.get(f"{limited.url}/edge/list", headers=limited.headers).status_code == 429
    assert httpx.post(f"{limited.url}/auth/login", json={"token": "wrong"}).status_code == 429
    time.sleep(int(blocked.headers["retry-after"]))
    assert httpx.get(f"{limited.url}/edge/list", headers=limited.headers).status_code == 200


def test_refused_logins_count_against_the_address_and_429s_are_not_audited(limited: Stack) -> None:
    """Any refusal of a login route is a failed try (not only a 401), and once throttled nothing
    from the address reaches the audit log: a flood cannot rotate the real history away."""
    cross_site = {"Origin": "http://elsewhere.example"}
    for _ in range(3):
        assert httpx.post(f"{limited.url}/auth/login", json={"token": "x"}, headers=cross_site).status_code == 403
    assert httpx.post(f"{limited.url}/auth/login", json={"token": "x"}, headers=cross_site).status_code == 429
    for _ in range(20):
        assert httpx.get(f"{limited.url}/auth/oidc/callback", params={"state": "x", "code": "y"}).status_code == 429
    lines = audit_lines(limited)
    assert [line["status"] for line in lines if line["path"] == "/auth/login"] == [403] * 3
    assert not [line for line in lines if line["status"] == 429], lines


def test_the_python_client_waits_out_a_429(limited: Stack) -> None:
    """BridgeClient honours Retry-After (bounded), so scripts slow down instead of failing."""
    client = limited.client(limited.create_token("user"))
    started = time.monotonic()
    for _ in range(8):  # burst 4, 2 a second: the last ones wait
        assert "test" in client.list_edges()
    assert time.monotonic() - started >= 1.0
