"""Faults: dead edges, oversized bodies, bad tokens, stale and malformed connections, deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time

import httpx
import msgpack
import pytest
import websockets

from isthmus.testing.stack import Stack, poll_for
from isthmus.wire import protocol as P
from tests.conftest import support_env


def _edges(stack: Stack) -> dict:
    return httpx.get(f"{stack.url}/edge/list", headers=stack.headers, timeout=5).json()["edges"]


def test_edge_killed_mid_request_fails_fast_with_503() -> None:
    with Stack(plugins=["testplugins:PluginProbe"], env=support_env()) as s:
        result: dict = {}

        def call() -> None:
            start = time.monotonic()
            resp = httpx.get(f"{s.url}/test/probe/sleep", params={"s": 30}, headers=s.headers, timeout=40)
            result.update(status=resp.status_code, took=time.monotonic() - start, body=resp.json())

        import threading

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)
        s.kill_edge()
        t.join(20)
        assert result["status"] == 503
        assert result["took"] < 5, "the bridge must fail in-flight requests at once, not at the deadline"
        assert "disconnected" in result["body"]["detail"]


def test_oversized_body_is_413_and_link_stays_up() -> None:
    with Stack(plugins=["testplugins:PluginProbe"], env=support_env(),
               bridge_args=["--max-body", str(1024 * 1024)]) as s, s.http(timeout=30) as http:
        resp = http.post("/test/probe/echo", content=b"x" * (1024 * 1024 + 1))
        assert resp.status_code == 413 and "limit" in resp.json()["detail"]

        def chunks():
            for _ in range(40):
                yield b"y" * 65536

        resp = http.post("/test/probe/echo", content=chunks())
        assert resp.status_code == 413
        # the same edge connection still serves
        assert http.get("/test/probe/version").status_code == 200
        assert http.post("/test/probe/echo", content=b"z" * 1000).json()["size"] == 1000


def test_deadline_is_504_and_cancels_edge_work(tmp_path) -> None:
    with Stack(plugins=["testplugins:PluginProbe"], env=support_env(PROBE_MARKERS=str(tmp_path)),
               bridge_args=["--request-timeout", "1"]) as s, s.http(timeout=30) as http:
        start = time.monotonic()
        resp = http.get("/test/probe/sleep", params={"s": 20, "tag": "deadline"})
        assert resp.status_code == 504 and "1 s" in resp.json()["detail"]
        assert time.monotonic() - start < 5
        poll_for(lambda: (tmp_path / "cancelled-deadline").exists(), 10, what="edge-side cancellation")
        # a longer deadline may be asked for per request
        assert http.get("/test/probe/sleep", params={"s": 1.5},
                        headers={"X-Isthmus-Deadline": "10"}).status_code == 200


def test_wrong_edge_token_is_refused_and_edge_backs_off() -> None:
    with Stack(plugins=["sysinfo"]) as s:
        env = {**os.environ, "ISTHMUS_EDGE_TOKEN": "wrong", "XDG_STATE_HOME": str(s.workdir / "st2")}
        proc = subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge", f"ws://127.0.0.1:{s.port}",
                                 "--name", "intruder", "--plugins", "sysinfo"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            time.sleep(3)
            assert "intruder" not in _edges(s)
            assert proc.poll() is None, "a refused edge backs off and retries; it does not exit"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=15)
        text = out.decode()
        assert "enrolment token not valid" in text
        assert text.count("refused this edge") <= 2, "a refused edge must back off, not spin"


def test_reconnecting_edge_replaces_stale_connection() -> None:
    with Stack(plugins=["sysinfo"]) as s:
        old_pid = s.edge_pid
        os.kill(old_pid, signal.SIGSTOP)  # its socket stays open but silent: half-open
        try:
            old_proc = s.edge_proc
            s.start_edge(wait=False)
            new_pid = s.edge_pid

            def new_one_serves() -> bool:
                r = httpx.get(f"{s.url}/test/sysinfo/info", headers=s.headers, timeout=5)
                return r.status_code == 200

            poll_for(new_one_serves, 20, what="the new connection serving")
            assert new_pid != old_pid
            assert s.edge_proc.poll() is None
        finally:
            os.kill(old_pid, signal.SIGKILL)
            assert old_proc is not None
            old_proc.wait(10)
        # killing the old, replaced process does not take the edge away
        time.sleep(0.5)
        assert "test" in _edges(s)


async def _raw_edge(url: str, name: str, token: str, after_hello: list[bytes]) -> str:
    async with websockets.connect(url, max_size=P.MAX_MESSAGE) as ws:
        await ws.send(P.pack([{"t": P.HELLO, "v": P.PROTOCOL_VERSION, "name": name, "token": token,
                               "plugins": {}}]))
        first = P.unpack(await ws.recv())[0]
        assert first["t"] == P.WELCOME
        for data in after_hello:
            await ws.send(data)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.exceptions.ConnectionClosed as exc:
            return f"closed {exc.rcvd.code if exc.rcvd else None}"
        except TimeoutError:
            return "still open"


@pytest.mark.parametrize("garbage", [
    b"\xc1\xc1 not msgpack",
    msgpack.packb({"t": "res"}),  # not a list
    msgpack.packb([{"t": "bogus"}]),
    msgpack.packb([{"t": "res"}]),  # no id
    msgpack.packb([{"t": "notify", "plugin": "x", "topic": "t", "d": b"{}\n\ndata: evil"}]),
])
def test_malformed_frames_drop_only_that_edge(garbage: bytes) -> None:
    with Stack(plugins=["sysinfo"]) as s:
        outcome = asyncio.run(_raw_edge(f"ws://127.0.0.1:{s.port}/_edge/connect", "mallory", s.edge_token,
                                        [garbage]))
        assert outcome.startswith("closed")
        assert "mallory" not in _edges(s)
        assert httpx.get(f"{s.url}/test/sysinfo/version", headers=s.headers).status_code == 200


def test_refused_names_and_versions() -> None:
    with Stack(plugins=["sysinfo"]) as s:
        async def hello(frame: dict) -> dict:
            async with websockets.connect(f"ws://127.0.0.1:{s.port}/_edge/connect") as ws:
                await ws.send(P.pack([frame]))
                return P.unpack(await ws.recv())[0]

        base = {"t": P.HELLO, "v": P.PROTOCOL_VERSION, "token": s.edge_token, "plugins": {}}
        refused = asyncio.run(hello({**base, "name": "events"}))
        assert refused["t"] == P.REFUSE and "not allowed" in refused["reason"]
        refused = asyncio.run(hello({**base, "name": "<b>x</b>"}))
        assert refused["t"] == P.REFUSE
        refused = asyncio.run(hello({**base, "name": "ok", "v": 999}))
        assert refused["t"] == P.REFUSE and "protocol version" in refused["reason"]


def test_admin_disconnect_and_terminate() -> None:
    with Stack(plugins=["sysinfo"]) as s, s.http() as http:
        assert http.post("/edge/disconnect/nope").status_code == 404
        assert http.post("/edge/disconnect/test").json()["status"] == "disconnected"
        assert s.edge_proc is not None
        assert s.edge_proc.wait(15) == 0, "a disconnected edge stops cleanly"
        assert "test" not in _edges(s)
        assert http.post("/bridge/terminate").json() == {"status": "terminating"}
        assert s.bridge_proc is not None
        assert s.bridge_proc.wait(15) == 0


def test_plain_http_refused_off_loopback() -> None:
    proc = subprocess.run([sys.executable, "-m", "isthmus", "bridge", "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "refusing plain HTTP" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "isthmus", "edge", "--bridge", "ws://10.0.0.1:8000",
                           "--name", "x"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "wss://" in proc.stderr


def test_tls_bridge_and_verified_edge(tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    from isthmus.testing.stack import free_port

    port = free_port()
    ctx = ssl.create_default_context(cafile=str(cert))
    env = {**os.environ, "ISTHMUS_ADMIN_TOKEN": "adm", "ISTHMUS_EDGE_TOKEN": "edg",
           "XDG_STATE_HOME": str(tmp_path / "s"), "XDG_CONFIG_HOME": str(tmp_path / "c")}
    bridge = subprocess.Popen([sys.executable, "-m", "isthmus", "bridge", "--host", "127.0.0.1", "--port", str(port),
                               "--tls-cert", str(cert), "--tls-key", str(key)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    edge = subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge", f"wss://localhost:{port}",
                             "--name", "secure", "--plugins", "sysinfo", "--ca-file", str(cert)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listed() -> bool:
            r = httpx.get(f"https://127.0.0.1:{port}/edge/list", headers={"Authorization": "Bearer adm"},
                          verify=ctx, timeout=2)
            return "secure" in r.json()["edges"]

        poll_for(listed, 30, what="edge over wss")
        r = httpx.get(f"https://127.0.0.1:{port}/secure/sysinfo/version", headers={"Authorization": "Bearer adm"},
                      verify=ctx)
        assert r.json()["version"] == "0.1.0"
    finally:
        for p in (edge, bridge):
            p.send_signal(signal.SIGTERM)
            p.wait(15)
