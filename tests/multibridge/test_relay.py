"""The bridge-to-bridge relay: a real uvicorn server stands in for bridge A, another runs B's relay.

Run as a script for the benchmark with A and B in their own processes (JSON on stdout):

    .venv/bin/python tests/multibridge/test_relay.py [requests]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from isthmus.bridge.auth import credentials
from isthmus.bridge.relay import Relay
from tests.multibridge.conftest import eventually

MiB = 1024 * 1024
BIG = 50  # MiB for the streaming tests
PIECE = b"\xab" * MiB


async def _json(send: Any, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(data)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class BridgeA:
    """Stands in for bridge A: echoes, counts uploads, streams downloads, hangs on request."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        self.requests.append({"path": path, "raw_path": scope.get("raw_path", b"").decode(), "client": scope["client"],
                              "query": scope["query_string"].decode(),
                              "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]})
        if path == "/e/p/small":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
        elif path.startswith("/e/p/echo"):
            body = bytearray()
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await _json(send, 201, {**self.requests[-1], "method": scope["method"], "body": body.decode()},
                        [(b"x-from-a", b"1"), (b"set-cookie", b"a=1")])
        elif path == "/e/p/upload":
            total = chunks = biggest = 0
            digest = hashlib.sha256()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnects.append(path)
                    return
                data = message.get("body", b"")
                total += len(data)
                chunks += 1
                biggest = max(biggest, len(data))
                digest.update(data)
                if not message.get("more_body"):
                    break
            await _json(send, 200, {"bytes": total, "chunks": chunks, "biggest": biggest, "sha": digest.hexdigest()})
        elif path == "/e/p/download":
            size = int(scope["query_string"].decode().partition("=")[2] or BIG)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"content-length", str(size * MiB).encode())]})
            for _ in range(size):
                await send({"type": "http.response.body", "body": PIECE, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path in ("/e/p/hang", "/e/p/trickle"):
            await self._until_gone(path, receive, send)

    async def _until_gone(self, path: str, receive: Any, send: Any) -> None:
        """Never finish: /hang sends nothing, /trickle streams a chunk every 50 ms."""
        async def trickle() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:
                await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
                await asyncio.sleep(0.05)

        streamer = asyncio.create_task(trickle()) if path == "/e/p/trickle" else None
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnects.append(path)
        finally:
            if streamer is not None:
                streamer.cancel()


@dataclass
class Settings:
    url: str = ""
    deadline: float = 60.0
    max_body: int = 64 * 1024**3


def bridge_b(relay: Relay, settings: Settings) -> Any:
    """B: every request goes to A through the relay, with the caller's token (bearer or cookie)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        token, _ = credentials(scope["headers"])
        await relay.relay(settings.url, scope, receive, send, token=token or "", deadline=settings.deadline,
                          max_body=settings.max_body, target="A")

    return app


def _socket() -> socket.socket:
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so (else Nagle adds 40 ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    sock = _socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                           proxy_headers=False, timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def two_bridges(**settings: Any) -> AsyncIterator[tuple[BridgeA, Settings, httpx.AsyncClient, Relay]]:
    a = BridgeA()
    relay = Relay("B", margin=0.2)
    config = Settings(**settings)
    async with serving(a) as a_url, serving(bridge_b(relay, config)) as b_url:
        config.url = config.url or a_url
        async with httpx.AsyncClient(base_url=b_url, timeout=30) as client:
            try:
                yield a, config, client, relay
            finally:
                await relay.aclose()


@pytest.mark.asyncio
async def test_small_request_headers_and_credentials() -> None:
    async with two_bridges() as (a, _, client, _relay):
        r = await client.post("/e/p/echo/a%2Fb?x=%2F&y=1", content=b"hello",
                              headers={"authorization": "Bearer tok-1", "x-forwarded-for": "10.0.0.1",
                                       "x-custom": "kept", "connection": "keep-alive, x-custom-hop"})
        assert r.status_code == 201
        seen = r.json()
        headers = dict(seen["headers"])
        assert seen["method"] == "POST" and seen["body"] == "hello"
        assert seen["raw_path"] == "/e/p/echo/a%2Fb" and seen["query"] == "x=%2F&y=1"
        assert headers["authorization"] == "Bearer tok-1"
        assert headers["x-isthmus-relayed"] == "B"
        assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        assert headers["x-isthmus-deadline"] == "60"
        assert headers["x-custom"] == "kept" and headers["content-length"] == "5"
        assert "connection" not in headers or headers["connection"] != "keep-alive, x-custom-hop"
        # A's answer as A sent it (its header policy already applied), minus hop-by-hop.
        assert r.headers["x-from-a"] == "1" and r.headers["set-cookie"] == "a=1"
        assert r.headers.get_list("date") and len(r.headers.get_list("date")) == 1

        # One pooled connection from B to A serves one request after another.
        for _ in range(5):
            assert (await client.get("/e/p/small")).status_code == 200
        assert len({tuple(r["client"]) for r in a.requests}) == 1

        # The Explorer's cookie becomes a bearer token; other cookies stay behind (and A's
        # Set-Cookie above was not kept by B for later requests).
        r = await client.get("/e/p/echo", headers={"cookie": "other=1; isthmus_session=tok-2"})
        headers = dict(r.json()["headers"])
        assert headers["authorization"] == "Bearer tok-2" and "cookie" not in headers


@pytest.mark.asyncio
async def test_a_relayed_request_is_never_relayed_again() -> None:
    async with two_bridges() as (a, _, client, _relay):
        r = await client.get("/e/p/small", headers={"x-isthmus-relayed": "C"})
        assert r.status_code == 503 and "edge moved" in r.json()["detail"]
        assert a.requests == []


@pytest.mark.asyncio
async def test_50_mb_streams_both_ways_without_being_held() -> None:
    async with two_bridges() as (_a, _, client, _relay):
        async def upload() -> AsyncIterator[bytes]:
            for _ in range(BIG):
                yield PIECE

        expected = hashlib.sha256(PIECE * BIG).hexdigest()
        tracemalloc.start()
        try:
            began = time.monotonic()
            r = await client.post("/e/p/upload", content=upload())
            up = time.monotonic() - began
            _, up_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert r.status_code == 200, r.text
            result = r.json()
            assert result["bytes"] == BIG * MiB
            assert result["sha"] == expected
            assert result["chunks"] > BIG and result["biggest"] <= MiB  # arrived in pieces, as sent

            began = time.monotonic()
            received = pieces = 0
            async with client.stream("GET", "/e/p/download", params={"mb": BIG}) as response:
                assert response.status_code == 200
                assert response.headers["content-length"] == str(BIG * MiB)
                async for data in response.aiter_raw():
                    received += len(data)
                    pieces += 1
            down = time.monotonic() - began
            _, down_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == BIG * MiB and pieces > BIG
        # Everything (client, B, A) runs in this process: a body held whole anywhere would show.
        assert up_peak < 16 * MiB, up_peak
        assert down_peak < 16 * MiB, down_peak
        print(json.dumps({"upload_50MB_s": round(up, 2), "download_50MB_s": round(down, 2),
                          "peak_traced_MiB": round(max(up_peak, down_peak) / MiB, 1)}))


@pytest.mark.asyncio
async def test_body_over_the_limit() -> None:
    async with two_bridges(max_body=MiB) as (a, _, client, _relay):
        r = await client.post("/e/p/upload", content=b"x" * (MiB + 1))
        assert r.status_code == 413 and a.requests == []  # declared: refused before A is asked

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"y" * (512 * 1024)
                await asyncio.sleep(0.01)

        r = await client.post("/e/p/upload", content=chunked())
        assert r.status_code == 413
        await eventually(lambda: a.disconnects == ["/e/p/upload"], 2.0, "A's upload is cut off")


@pytest.mark.asyncio
async def test_deadline_gives_504_and_closes_the_upstream_request() -> None:
    async with two_bridges(deadline=0.3) as (a, _, client, _relay):
        began = time.monotonic()
        r = await client.get("/e/p/hang")
        took = time.monotonic() - began
        assert r.status_code == 504 and "bridge A" in r.json()["detail"]
        assert 0.45 <= took < 2.0, took
        assert dict(a.requests[0]["headers"])["x-isthmus-deadline"] == "0.3"
        await eventually(lambda: a.disconnects == ["/e/p/hang"], 2.0, "A sees the request closed")

        # The caller's own deadline header wins, as on a local call.
        r = await client.get("/e/p/hang", headers={"x-isthmus-deadline": "0.1"})
        assert r.status_code == 504 and "0.1 s" in r.json()["detail"]


@pytest.mark.asyncio
async def test_client_going_away_closes_the_upstream_request() -> None:
    async with two_bridges() as (a, _, client, _relay):
        waiting = asyncio.create_task(client.get("/e/p/hang"))
        await eventually(lambda: len(a.requests) == 1, 2.0, "A has the request")
        waiting.cancel()  # the client hangs up before A answers
        await asyncio.gather(waiting, return_exceptions=True)
        await eventually(lambda: a.disconnects == ["/e/p/hang"], 2.0, "A sees http.disconnect")

        # ... and while a response is streaming.
        async with client.stream("GET", "/e/p/trickle") as response:
            async for _ in response.aiter_raw():
                break
        await eventually(lambda: a.disconnects == ["/e/p/hang", "/e/p/trickle"], 2.0, "A's stream is closed")


@pytest.mark.asyncio
async def test_bridge_a_unreachable_is_a_502_that_says_what_to_do() -> None:
    with _socket() as closed:
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        async with two_bridges(url=f"http://127.0.0.1:{port}") as (_, _settings, client, _relay):
            r = await client.get("/e/p/small")
            assert r.status_code == 502
            detail = r.json()["detail"]
            assert f"bridge A (http://127.0.0.1:{port})" in detail and "retry" in detail
            assert "advertise_url" in detail


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 3)}


async def _measure(client: httpx.AsyncClient, url: str, n: int) -> list[float]:
    for _ in range(20):  # warm the connections
        await client.get(url)
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        r = await client.get(url)
        samples.append(time.perf_counter() - began)
        assert r.status_code == 200
    return samples


@pytest.mark.asyncio
async def test_benchmark_relayed_vs_direct_small_get() -> None:
    """All in one event loop (client, B, A): a sanity bound; the script mode runs separate processes."""
    async with two_bridges() as (_, settings, client, _relay):
        async with httpx.AsyncClient(timeout=10) as direct:
            plain = await _measure(direct, settings.url + "/e/p/small", 100)
        relayed = await _measure(client, "/e/p/small", 100)
    figures = {"direct": _percentiles(plain), "relayed": _percentiles(relayed)}
    print(json.dumps({"in_process": figures}))
    assert figures["relayed"]["p50_ms"] < 3 * figures["direct"]["p50_ms"] + 20  # loose: CI machines are busy


# -- the benchmark with A and B in their own processes ---------------------------------------------------


def _serve_forever(kind: str, port: int, a_url: str = "") -> None:
    app: Any = BridgeA() if kind == "a" else bridge_b(Relay("B"), Settings(url=a_url))
    uvicorn.run(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False,
                proxy_headers=False, server_header=False)


def _free_port() -> int:
    with _socket() as s:
        return int(s.getsockname()[1])


async def _bench(n: int) -> dict[str, Any]:
    a_port, b_port = _free_port(), _free_port()
    a_url, b_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    procs = [await asyncio.create_subprocess_exec(sys.executable, __file__, "serve", "a", str(a_port)),
             await asyncio.create_subprocess_exec(sys.executable, __file__, "serve", "b", str(b_port), a_url)]
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for url in (a_url, b_url):
                for _ in range(200):
                    try:
                        await client.get(url + "/e/p/small")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            direct = await _measure(client, a_url + "/e/p/small", n)
            relayed = await _measure(client, b_url + "/e/p/small", n)
        return {"requests": n, "direct": _percentiles(direct), "relayed": _percentiles(relayed)}
    finally:
        for proc in procs:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve_forever(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
    else:
        print(json.dumps(asyncio.run(_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))))
