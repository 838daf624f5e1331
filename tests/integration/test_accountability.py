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

PLUGINS = ["sysinfo", "tasks", "staging", "psij", "testplugins:PluginProbe"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("accountability")
    config = {"state_dir": str(work / "state"), "tokens_file": str(work / "tokens.json"), "scheduler": "none",
              "plugins": {"staging": {"roots": [str(work / "sandbox")]}, "psij": {"enabled": True}}}
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


Expected = tuple[str | None, str, str | None, str | None, int | None]  # request id, action, method, path, status


class Script:
    """A scripted session: the calls that must each be one audit line note what the client saw,
    and ``check`` compares the log, line by line, with that list (reads must add nothing)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.before = len(audit_lines(stack))
        self.expected: list[Expected] = []

    def call(self, http: httpx.Client, method: str, path: str, action: str | None, **kwargs: Any) -> httpx.Response:
        """``action``: the audit line's action, or None for a call that must leave none."""
        r = http.request(method, path, **kwargs)
        if action is not None:
            self.expected.append((r.headers["x-request-id"], action, method, path, r.status_code))
        return r

    def cli(self, *args: str, action: str) -> subprocess.CompletedProcess[str]:
        """An ``isthmus`` command run on the bridge's host: its line has no request id."""
        self.written()  # the bridge's lines first, so that the order in the file is the script's
        done = isthmus(self.stack, *args)
        assert done.returncode == 0, done.stderr
        self.expected.append((None, action, None, None, None))
        return done

    def written(self) -> list[dict[str, Any]]:
        """The lines since the script began, once there are as many as expected."""
        return list(poll_for(lambda: (x := audit_lines(self.stack)[self.before:]) and len(x) >= len(self.expected)
                             and x, 10, what=f"{len(self.expected)} audit lines"))

    def check(self) -> dict[str | None, dict[str, Any]]:
        """Exactly the expected lines, in order; returns them by request id."""
        self.written()
        time.sleep(0.3)  # nothing more may arrive
        lines = audit_lines(self.stack)[self.before:]
        assert [(e["request_id"], e["action"], e.get("method"), e.get("path"), e.get("status"))
                for e in lines] == self.expected
        return {e["request_id"]: e for e in lines}


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


def test_the_bridges_log_line_about_a_request_carries_its_id(stack: Stack) -> None:
    """The bridge logs nothing per request at INFO; an edge dying mid-response is a line it
    does write (a warning, while serving that request), and it must name the request."""
    size, received = 256 * 1024 * 1024, 0
    try:
        with stack.http() as http, http.stream("GET", "/test/probe/stream", params={"n": size}) as r:
            assert r.status_code == 200
            rid = r.headers["x-request-id"]
            chunks = r.iter_bytes()
            received += len(next(chunks))
            stack.kill_edge()  # credit holds the edge back: the response is far from done
            with pytest.raises(httpx.RemoteProtocolError):  # truncated, never a silent short body
                for chunk in chunks:
                    received += len(chunk)
    finally:
        stack.start_edge()
    assert 0 < received < size

    def logged() -> dict[str, Any] | None:
        for line in (stack.workdir / "bridge.log").read_text().splitlines():  # type: ignore[operator]
            if line.startswith("{") and "went away while streaming" in line:
                found: dict[str, Any] = json.loads(line)
                return found
        return None

    entry = poll_for(logged, 10, what="the bridge's JSON log line about the broken response")
    assert entry["request_id"] == rid and entry["logger"] == "isthmus.bridge.proxy"
    assert entry["level"] == "warning" and entry["message"].startswith("edge test went away")


def test_audit_log_has_one_line_per_change_and_none_for_reads(stack: Stack) -> None:
    user = stack.create_token("user", name="alice")
    viewer = stack.create_token("viewer", name="vera")
    script = Script(stack)
    call = script.call

    with stack.http(user) as http:
        call(http, "GET", "/edge/list", None)
        call(http, "POST", "/edge/list", None)
        call(http, "GET", "/test/sysinfo/version", None)
        sid = call(http, "POST", "/test/tasks/register_session", "tasks.register_session", json={}).json()["sid"]
        uids = call(http, "POST", f"/test/tasks/submit_tasks/{sid}", "tasks.submit_tasks",
                    json={"tasks": [{"executable": "/bin/true"}]}).json()["uids"]
        call(http, "POST", f"/test/tasks/wait_tasks/{sid}", None, json={"uids": uids, "timeout": 20})
        call(http, "POST", f"/test/tasks/task_states/{sid}", None, json={"uids": uids})
        call(http, "GET", f"/test/tasks/list_tasks/{sid}", None)
        ssid = call(http, "POST", "/test/staging/register_session", "staging.register_session", json={}).json()["sid"]
        results = str(stack.workdir / "sandbox" / "results")  # type: ignore[operator]
        assert call(http, "POST", f"/test/staging/mkdir/{ssid}", "staging.mkdir",
                    json={"path": results}).status_code == 200
        assert call(http, "POST", f"/test/staging/remove/{ssid}", "staging.remove",
                    json={"path": results + "/"}).status_code == 200
        call(http, "GET", f"/test/staging/list/{ssid}", None, params={"path": str(Path(results).parent)})
        assert call(http, "POST", "/edge/disconnect/test", "refused").status_code == 403  # not admin
    with stack.http(viewer) as http:
        assert call(http, "POST", "/test/probe/echo", "refused", content=b"x").status_code == 403
        call(http, "GET", "/test/sysinfo/version", None)
    with httpx.Client(base_url=stack.url) as anon:
        assert call(anon, "GET", "/edge/list", None).status_code == 401  # no credential: nobody to audit
        assert call(anon, "GET", "/edge/list", "refused", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = call(anon, "POST", "/auth/login", "login", json={"token": user})
        assert r.status_code == 200
        anon.cookies.set("isthmus_session", user)
        call(anon, "GET", "/auth/whoami", None)
        call(anon, "POST", "/auth/logout", "logout")

    by_id = script.check()
    expected = script.expected
    submit = by_id[expected[1][0]]
    assert submit["principal"].startswith("tok_")
    assert submit["name"] == "alice" and submit["role"] == "user" and submit["edge"] == "test"
    assert submit["plugin"] == "tasks" and submit["source"] == "127.0.0.1" and submit["bytes_in"] > 0
    assert by_id[expected[-4][0]]["name"] == "vera"
    assert by_id[expected[-2][0]]["name"] == "alice" and by_id[expected[-1][0]]["name"] == "alice"
    text = (stack.workdir / "state" / "audit.log").read_text()  # type: ignore[operator]
    assert user not in text and viewer not in text, "no token ever reaches the audit log"


def test_jobs_files_config_disconnect_and_revoke_are_one_line_each(stack: Stack) -> None:
    """The rest of the state-changing calls: a job submitted and cancelled (psij, local
    executor), a file put (upload and commit), a plugin's configuration written and the
    edge's reload, the edge disconnected, a token revoked; the reads between leave nothing."""
    user = stack.create_token("user", name="carol")
    doomed, entry = stack.create_token_entry("viewer", name="doomed")
    script = Script(stack)
    call = script.call
    try:
        with stack.http(user) as http:
            psid = call(http, "POST", "/test/psij/register_session", "psij.register_session", json={}).json()["sid"]
            job = call(http, "POST", f"/test/psij/submit_job/{psid}", "psij.submit_job",
                       json={"job_spec": {"executable": "/bin/sleep", "arguments": ["60"]}, "executor": "local"})
            job_id = job.json()["job_id"]
            poll_for(lambda: call(http, "GET", f"/test/psij/job_status/{psid}/{job_id}", None).json()["state"]
                     == "RUNNING", 30, 0.1, what="the job running")
            cancel = call(http, "POST", f"/test/psij/cancel_job/{psid}/{job_id}", "psij.cancel_job")
            assert cancel.json() == {"job_id": job_id, "status": "cancel requested"}
            poll_for(lambda: call(http, "GET", f"/test/psij/job_status/{psid}/{job_id}", None).json()["state"]
                     == "CANCELLED", 30, 0.1, what="the job cancelled")
            call(http, "GET", f"/test/psij/list_jobs/{psid}", None)

            ssid = call(http, "POST", "/test/staging/register_session", "staging.register_session",
                        json={}).json()["sid"]
            data, target = b"audited bytes\n", str(stack.workdir / "sandbox" / "put.txt")  # type: ignore[operator]
            up = call(http, "PUT", f"/test/staging/upload/{ssid}", "staging.upload", content=data,
                      params={"path": target, "offset": 0, "overwrite": "false"})
            assert up.json()["partial_size"] == len(data)
            commit = call(http, "POST", f"/test/staging/commit/{ssid}", "staging.commit",
                          json={"path": target, "size": len(data), "sha256": up.json()["sha256"]})
            assert commit.status_code == 200, commit.text
            assert call(http, "GET", f"/test/staging/download/{ssid}", None, params={"path": target}).content == data
        with stack.http() as admin:
            values = call(admin, "GET", "/test/_edge/plugins/staging/config", None).json()["values"]
            put = call(admin, "PUT", "/test/_edge/plugins/staging/config", "config.change", json=values)
            assert put.status_code == 200, put.text
            assert call(admin, "POST", "/test/_edge/reload", "config.change").status_code == 200
            gone = call(admin, "POST", "/edge/disconnect/test", "edge.disconnect")
            assert gone.json() == {"edge": "test", "status": "disconnected"}
            assert stack.edge_proc is not None and stack.edge_proc.wait(15) == 0
            assert "test" not in call(admin, "GET", "/edge/list", None).json()["edges"]
        with stack.http(doomed) as http:
            assert call(http, "GET", "/edge/list", None).status_code == 200
            script.cli("token", "revoke", entry["id"], action="token.revoke")
            refused = poll_for(lambda: (r := http.get("/edge/list")).status_code == 401 and r, 5, 0.05,
                               what="the revoked token refused")
            script.expected.append((refused.headers["x-request-id"], "refused", "GET", "/edge/list", 401))
    finally:
        if stack.edge_proc is not None and stack.edge_proc.poll() is not None:
            stack.start_edge()

    by_id = script.check()
    lines = list(by_id.values())
    assert [e["name"] for e in lines[:-2]] == ["carol"] * 6 + ["admin"] * 3
    assert {e["edge"] for e in lines[:-2]} == {"test"}
    assert by_id[up.headers["x-request-id"]]["bytes_in"] == len(data)
    revoked = by_id[None]
    assert revoked["token_id"] == entry["id"] and revoked["principal"].startswith("local:")
    assert by_id[refused.headers["x-request-id"]]["principal"] is None
    text = (stack.workdir / "state" / "audit.log").read_text()  # type: ignore[operator]
    assert user not in text and doomed not in text and "audited bytes" not in text


def test_isthmus_audit_filters(stack: Stack) -> None:
    token = stack.create_token("user", name="bob")
    with stack.http(token) as http:
        rid = http.post("/test/probe/echo", content=b"hello").headers["x-request-id"]
        http.post("/edge/disconnect/nowhere")  # refused (403): no edge field of test
    everything = isthmus(stack, "audit", "--json")
    assert everything.returncode == 0, everything.stderr
    entries = [json.loads(line) for line in everything.stdout.splitlines()]
    bob = [e for e in entries if e.get("name") == "bob"]  # CLI lines (token.revoke) have no name
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
    """Rate 2/s, burst 4. However slowly a busy machine serves them, the first four pass (a
    fresh principal has a full bucket) and no more pass than the bucket allows in the time
    taken, 4 + 2 per second: the count is checked against the measured time, not assumed."""
    with limited.http(limited.create_token("user")) as http:
        codes: list[int] = []
        started = time.monotonic()
        while not codes or codes[-1] != 429:
            refused = http.get("/edge/list")
            codes.append(refused.status_code)
            assert len(codes) <= 200, "no 429 in 200 requests"
        elapsed = time.monotonic() - started  # spans every request's arrival at the bridge
        assert codes[:4] == [200] * 4 and set(codes[:-1]) == {200}
        assert len(codes) - 1 <= 4 + 2 * elapsed, f"{len(codes) - 1} passed in {elapsed:.2f} s"
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


def test_logouts_with_junk_tokens_are_throttled_like_bad_tokens(limited: Stack) -> None:
    """A logout always clears the browser's cookies, yet a refused credential on it is a failed
    try: nobody unauthenticated can append audit lines without bound."""
    junk = {"Authorization": "Bearer not-a-token"}
    for _ in range(3):
        assert httpx.post(f"{limited.url}/auth/logout", headers=junk).status_code == 200
    assert httpx.post(f"{limited.url}/auth/logout", headers=junk).status_code == 429
    logouts = [line for line in audit_lines(limited) if line["path"] == "/auth/logout"]
    assert len(logouts) == 3 and all(line["principal"] is None for line in logouts), logouts
    assert all(line["credential"].startswith("refused") for line in logouts), logouts


def test_the_python_client_waits_out_a_429(limited: Stack) -> None:
    """BridgeClient honours Retry-After (bounded), so scripts slow down instead of failing."""
    client = limited.client(limited.create_token("user"))
    started = time.monotonic()
    for _ in range(8):  # burst 4, 2 a second: the last ones wait
        assert "test" in client.list_edges()
    assert time.monotonic() - started >= 1.0
