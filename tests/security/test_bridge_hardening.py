"""Attacks on the bridge itself, each replayed against real bridge and edge processes.

Items of the adversarial review (issue 17): 1 (edge takeover), 3 and 4 (memory before
authentication), 5 (principal ids), 7 (forged events), 8 (replay ring in bytes),
9 (slow and idle clients), 11 (revocation), 14 (bridge-hosted plugin limits), 15 (edge
names), 16 (bad input), 18 (token file), 19 (planted config).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from isthmus.bridge.auth import create_token, read_entries, revoke_token
from isthmus.config import load_app_config
from isthmus.errors import ConfigError
from isthmus.testing.stack import Stack, poll_for
from isthmus.wire import protocol as P
from tests.conftest import support_env

from .fake_edge import FakeEdge, empty_maps, raw_ws_message, rss

MB = 1024 * 1024
RSS_BUDGET = 64 * MB

LIMITS = {"header_timeout": 2.0, "body_timeout": 2.0, "idle_timeout": 2, "preauth_per_address": 16,
          "max_event": 1024 * 1024, "event_ring_bytes": 16 * MB}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    markers = tmp_path_factory.mktemp("markers")
    with Stack(plugins=["sysinfo", "testplugins:PluginProbe"], config={"bridge": LIMITS},
               bridge_plugins=["testplugins:PluginProbe"],
               bridge_args=["--request-timeout", "2", "--max-body", str(4 * MB)],
               env=support_env(PROBE_MARKERS=str(markers))) as s:
        s.markers = markers  # type: ignore[attr-defined]
        yield s


def settle_rss(pid: int) -> int:
    time.sleep(0.5)
    return rss(pid)


def sse_lines(stack: Stack, token: str, out: list[str], done: threading.Event, query: str = "") -> threading.Thread:
    def run() -> None:
        try:
            with httpx.stream("GET", f"{stack.url}/events{query}", headers={"Authorization": f"Bearer {token}"},
                              timeout=httpx.Timeout(30, read=30)) as r:
                for line in r.iter_lines():
                    out.append(line)
        except httpx.HTTPError as exc:
            out.append(f"ERROR {exc}")
        finally:
            done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    poll_for(lambda: any(line.startswith(": connected") for line in out), 10, what="event stream open")
    return t


# -- 3, 4: memory before authentication -----------------------------------------------------

def test_unauthenticated_ws_message_of_empty_maps_costs_nothing(stack: Stack) -> None:
    start = settle_rss(stack.bridge_pid)
    got = raw_ws_message(stack.port, empty_maps(16 * MB - 5))  # 16 MB of {} before any hello
    assert b"\x88" in got[:4] or got == b""  # a close frame (1009 too big) or a dropped socket
    small = raw_ws_message(stack.port, empty_maps(200_000))  # under the size limit, over the count
    assert b"\x88" in small[:64] or small == b""
    assert settle_rss(stack.bridge_pid) - start < RSS_BUDGET
    assert httpx.get(f"{stack.url}/healthz").status_code == 200


def _post_raw(port: int, head: bytes, body_source: Iterator[bytes], limit_s: float = 20.0) -> tuple[bytes, int]:
    """Send a request whose body keeps coming until the server answers; (answer, body bytes sent)."""
    import select

    sock = socket.create_connection(("127.0.0.1", port), timeout=limit_s)
    got = b""
    sent = 0
    try:
        sock.sendall(head)
        for piece in body_source:
            if select.select([sock], [], [], 0.01)[0]:
                break  # the answer (or a close) is there: stop sending
            try:
                sock.sendall(piece)
                sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        try:
            while chunk := sock.recv(65536):
                got += chunk
                if b"\r\n\r\n" in got:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return got, sent
    finally:
        sock.close()


def test_login_reads_a_few_kb_at_most(stack: Stack) -> None:
    start = settle_rss(stack.bridge_pid)
    block = b"x" * MB
    declared, sent = _post_raw(stack.port, b"POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: "
                                           b"application/json\r\ncontent-length: 536870912\r\n\r\n",
                               iter([block] * 512))
    assert declared.startswith(b"HTTP/1.1 413") and sent < 64 * MB
    chunked, sent = _post_raw(stack.port, b"POST /auth/login HTTP/1.1\r\nhost: x\r\ntransfer-encoding: "
                                          b"chunked\r\n\r\n", iter([b"100000\r\n" + block + b"\r\n"] * 512))
    assert chunked.startswith(b"HTTP/1.1 413") and sent < 64 * MB
    assert settle_rss(stack.bridge_pid) - start < RSS_BUDGET


# -- 9: slow and idle clients --------------------------------------------------------------

def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
        return True, got
    except ConnectionResetError:
        return True, got
    except TimeoutError:
        return False, got


def test_idle_connection_and_slow_headers_are_closed(stack: Stack) -> None:
    idle = socket.create_connection(("127.0.0.1", stack.port))
    slow = socket.create_connection(("127.0.0.1", stack.port))
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    t0 = time.monotonic()
    for _ in range(3):  # one header byte a second: never done within the 2 s header timeout
        time.sleep(1)
        try:
            slow.sendall(b"x")
        except (BrokenPipeError, ConnectionResetError):
            break
    closed, got = _closed_within(slow, 4)
    assert closed and b"408" in got.split(b"\r\n", 1)[0]
    closed, _ = _closed_within(idle, 4)
    assert closed and time.monotonic() - t0 < 8
    idle.close()
    slow.close()


def test_huge_header_is_refused_early(stack: Stack) -> None:
    start = settle_rss(stack.bridge_pid)
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=20)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
    sent = 0
    try:
        while sent < 100 * MB:
            sock.sendall(b"a" * MB)
            sent += MB
    except (BrokenPipeError, ConnectionResetError):
        pass
    closed, got = _closed_within(sock, 5)
    sock.close()
    assert closed and got.startswith(b"HTTP/1.1 431")
    assert sent < 100 * MB  # the bridge stopped reading long before 100 MB
    assert settle_rss(stack.bridge_pid) - start < RSS_BUDGET


def test_stalled_body_is_cut_off(stack: Stack) -> None:
    sock = socket.create_connection(("127.0.0.1", stack.port))
    sock.sendall(f"POST /test/probe/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {stack.admin_token}\r\n"
                 "content-length: 100000\r\n\r\n".encode() + b"y" * 10)
    closed, _ = _closed_within(sock, 6)  # body timeout 2 s in this stack
    sock.close()
    assert closed


def test_unauthenticated_connections_per_address_are_capped(stack: Stack) -> None:
    socks = [socket.create_connection(("127.0.0.1", stack.port)) for _ in range(LIMITS["preauth_per_address"])]
    try:
        extra = socket.create_connection(("127.0.0.1", stack.port))
        closed, got = _closed_within(extra, 2)
        extra.close()
        assert closed and got.startswith(b"HTTP/1.1 503")
    finally:
        for s in socks:
            s.close()
    # once they are gone, the address may connect again (authenticated requests were never counted)
    poll_for(lambda: httpx.get(f"{stack.url}/healthz").status_code == 200, 5, what="bridge answers again")


# -- 5: principals ---------------------------------------------------------------------------

def test_each_token_is_its_own_principal(stack: Stack) -> None:
    path = stack.tokens_file
    _, a = create_token(path, "user")
    _, b = create_token(path, "user")
    assert a["name"] != b["name"]  # no shared default name
    ann1 = stack.create_token("user", "ann")
    ann2 = stack.create_token("user", "ann")
    viewer_ann = stack.create_token("viewer", "ann")
    with stack.http(ann1) as h1, stack.http(ann2) as h2, stack.http(viewer_ann) as hv:
        sid = h1.post("/test/probe/register_session", json={}).json()["sid"]
        assert h1.post(f"/test/probe/ping/{sid}", json={"n": 1}).status_code == 200
        assert h2.post(f"/test/probe/ping/{sid}", json={"n": 1}).status_code == 404
        assert sid in str(h1.get("/test/probe/list_sessions").json())
        assert sid not in str(h2.get("/test/probe/list_sessions").json())
        assert sid not in str(hv.get("/test/probe/list_sessions").json())


def test_shared_principal_for_rotation(stack: Stack) -> None:
    old = stack.create_token("user", "rot", principal="p-rot")
    new = stack.create_token("user", "rot-new", principal="p-rot")
    with stack.http(old) as h_old, stack.http(new) as h_new:
        sid = h_old.post("/test/probe/register_session", json={}).json()["sid"]
        assert h_new.post(f"/test/probe/ping/{sid}", json={"n": 2}).json() == {"pong": 2}


# -- 7, 8: what an enrolled edge may publish -------------------------------------------------

def test_edge_cannot_forge_event_fields_or_other_plugins(stack: Stack) -> None:
    lines: list[str] = []
    done = threading.Event()
    sse_lines(stack, stack.admin_token, lines, done)
    forger = FakeEdge(stack.url, "forger", stack.edge_token)
    assert forger.first["t"] == P.WELCOME
    forger.notify("ok", b'{"fine":1}')
    poll_for(lambda: any('"fine":1' in line for line in lines), 5, what="a valid notification")
    forger.notify("x", b'1,"edge":"test","plugin":"psij"')  # tries to add fields
    assert forger.closed(5)
    forger2 = FakeEdge(stack.url, "forger", stack.edge_token)
    forger2.notify("x", b'{"a":1}', plugin="psij")  # a plugin it does not announce
    assert forger2.closed(5)
    forger3 = FakeEdge(stack.url, "forger", stack.edge_token)
    forger3.notify("topology", b'{"edges":{}}')  # a reserved topic
    assert forger3.closed(5)
    time.sleep(0.3)
    data = [orjson.loads(line[5:]) for line in lines if line.startswith("data:")]
    forged = [d for d in data if d.get("topic") == "notification" and d["data"]["edge"] == "forger"]
    assert [d["data"]["data"] for d in forged] == [{"fine": 1}]
    assert all(d["data"]["plugin"] == "probe" for d in forged)


def test_replay_ring_is_bounded_in_bytes(stack: Stack) -> None:
    start = settle_rss(stack.bridge_pid)
    edge = FakeEdge(stack.url, "bulk", stack.edge_token)
    big = orjson.dumps({"blob": "z" * (MB - 64)})
    for _ in range(100):  # 800 MB would be sent by 800; 100 of ~1 MB show the same bound
        edge.send(*[{"t": P.NOTIFY, "plugin": "probe", "topic": "big", "d": big, "ow": None}] * 8)
    edge.notify("too-big", orjson.dumps({"blob": "z" * (2 * MB)}))  # over max_event: dropped
    edge.notify("after", b'{"marker":true}')
    # a client that replays from the start gets a gap, then at most the ring's byte budget
    with httpx.stream("GET", f"{stack.url}/events?topic=after,too-big", headers={**stack.headers,
                      "Last-Event-ID": "0"}, timeout=20) as r:
        seen: list[str] = []
        for line in r.iter_lines():
            seen.append(line)
            if "marker" in line:
                break
    assert not any("too-big" in line for line in seen)
    assert settle_rss(stack.bridge_pid) - start < RSS_BUDGET
    edge.close()


# -- 11: revocation ends what is open ------------------------------------------------------

def test_revoking_a_token_ends_its_stream_and_edge_link(stack: Stack) -> None:
    token, entry = stack.create_token_entry("user", "leaver")
    lines: list[str] = []
    done = threading.Event()
    sse_lines(stack, token, lines, done)
    edge_token, edge_entry = stack.create_token_entry("edge", edge="revokee")
    edge = FakeEdge(stack.url, "revokee", edge_token)
    assert edge.first["t"] == P.WELCOME
    t0 = time.monotonic()
    assert revoke_token(stack.tokens_file, entry["id"])
    assert revoke_token(stack.tokens_file, edge_entry["id"])
    assert done.wait(3), "the event stream of a revoked token stayed open"
    assert time.monotonic() - t0 < 2.5
    assert edge.closed(3)
    assert any("revoked" in line for line in lines)
    with stack.http() as http:
        assert "revokee" not in http.get("/edge/list").json()["edges"]


# -- 14: bridge-hosted plugins get deadlines and body limits ----------------------------------

def test_bridge_plugin_deadline_and_body_limit(stack: Stack) -> None:
    markers: Path = stack.markers  # type: ignore[attr-defined]
    with stack.http(timeout=30) as http:
        r = http.get("/bridge/probe/sleep", params={"s": "10", "tag": "bridge-deadline"})
        assert r.status_code == 504
        poll_for(lambda: (markers / "cancelled-bridge-deadline").exists(), 5, what="plugin task cancelled")
        r = http.post("/bridge/probe/echo", content=b"z" * (5 * MB))
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:
            for _ in range(6):
                yield b"q" * MB

        assert http.post("/bridge/probe/echo", content=chunks()).status_code == 413
        assert http.post("/bridge/probe/echo", content=b"ok").json()["size"] == 2


# -- 15: edge names --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hpc1\n", "hpc1\r", "hpc 1", "-x", "../x", ""])
def test_bad_edge_names_are_refused(stack: Stack, name: str) -> None:
    edge = FakeEdge(stack.url, name, stack.edge_token)
    assert edge.first["t"] == P.REFUSE and "not allowed" in edge.first["reason"]


# -- 16: bad input answers 4xx ------------------------------------------------------------

def test_bad_json_input_is_a_client_error(stack: Stack) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with stack.http() as http:
        sid = http.post("/test/probe/register_session", json={}).json()["sid"]
        for body in (deep, b'{"n": "\xff\xfe"}'):
            r = http.post(f"/test/probe/ping/{sid}", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (body[:20], r.status_code, r.text)
        for body in (deep, b'{"n": "\xff\xfe"}', b'{"n": 1e400}'):
            r = http.post("/test/probe/register_session", content=body)
            assert 400 <= r.status_code < 500
        for body in (b"[" * 2000 + b"]" * 2000, b'{"token": "\xff"}', b'{"token": 1e400}'):
            r = httpx.post(f"{stack.url}/auth/login", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (body[:20], r.status_code, r.text)


# -- 1: the edge's secret and its name -------------------------------------------------------

def test_a_live_edge_is_not_replaced_by_a_token_holder(stack: Stack) -> None:
    thief = FakeEdge(stack.url, stack.edge, stack.edge_token)
    assert thief.first["t"] == P.REFUSE and "already connected" in thief.first["reason"]
    with stack.http() as http:
        listed = http.get("/edge/list").json()["edges"][stack.edge]
        assert listed["replaced"] is None and listed["host"] != "fake"
        assert http.get(f"/{stack.edge}/probe/whoami").status_code == 200


def test_a_dead_edge_is_replaced_after_the_probe_and_it_shows(stack: Stack) -> None:
    first = FakeEdge(stack.url, "stuck", stack.edge_token)
    key = first.frames and first.first["key"]
    # it never answers the probe: a newcomer takes over after PROBE_TIMEOUT, and /edge/list says so
    t0 = time.monotonic()
    second = FakeEdge(stack.url, "stuck", stack.edge_token)
    assert second.first["t"] == P.WELCOME and time.monotonic() - t0 >= 4
    with stack.http() as http:
        replaced = http.get("/edge/list").json()["edges"]["stuck"]["replaced"]
        assert "did not answer" in replaced["how"]
    # the holder of the connection key reconnects at once (the same edge over a half-open link)
    t0 = time.monotonic()
    third = FakeEdge(stack.url, "stuck", stack.edge_token, resume=second.first["key"])
    assert third.first["t"] == P.WELCOME and time.monotonic() - t0 < 2
    assert key != second.first["key"]
    for e in (first, second, third):
        e.close()


def test_edge_reads_its_token_from_a_private_file_and_drops_it_from_its_environment(
        stack: Stack, tmp_path: Path) -> None:
    secret = tmp_path / "edge.token"
    secret.write_text(stack.edge_token + "\n")
    secret.chmod(0o644)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    args = [sys.executable, "-m", "isthmus", "edge", "--bridge", stack.url, "--name", "filed",
            "--plugins", "sysinfo", "--token-file", str(secret)]
    loose = subprocess.run(args, env=base, capture_output=True, text=True, timeout=30)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    secret.chmod(0o600)
    proc = subprocess.Popen(args, env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with stack.http() as http:
            poll_for(lambda: "filed" in http.get("/edge/list").json()["edges"], 20, what="edge from a token file")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    from isthmus.cli import take_secret

    os.environ["ISTHMUS_TEST_SECRET"] = "s3cret"
    assert take_secret("ISTHMUS_TEST_SECRET") == "s3cret"
    assert "ISTHMUS_TEST_SECRET" not in os.environ
    probe = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('ISTHMUS_TEST_SECRET'))"],
                           capture_output=True, text=True, timeout=30)
    assert probe.stdout.strip() == "None"


# -- 18, 19: files the bridge trusts ---------------------------------------------------------

def test_token_file_is_never_written_through_a_planted_temporary(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    target = tmp_path / "stolen"
    (tmp_path / "tokens.tmp").symlink_to(target)
    (tmp_path / ".tokens.json.tmp").write_text("planted")
    (tmp_path / ".tokens.json.tmp").chmod(0o666)
    create_token(path, "admin", name="root")
    assert not target.exists()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [e["name"] for e in read_entries(path)] == ["root"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tokens.json.tmp", "tokens.json", "tokens.tmp"]


def test_planted_config_in_the_working_directory_is_refused(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    planted = tmp_path / "isthmus.yaml"
    planted.write_text("tokens_file: /tmp/attacker-tokens.json\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    planted.chmod(0o666)
    with pytest.raises(ConfigError, match="not trusted"):
        load_app_config()
    planted.chmod(0o644)
    if os.getuid() == 0:
        os.chown(planted, 65534, 65534)  # owned by nobody
        with pytest.raises(ConfigError, match="owned by another user"):
            load_app_config()
        os.chown(planted, 0, 0)
    assert str(load_app_config().tokens_file) == "/tmp/attacker-tokens.json"  # own file: trusted
    named = load_app_config(str(planted))
    assert named.path == planted.resolve()
