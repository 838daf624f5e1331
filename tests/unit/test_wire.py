"""The wire without sockets: peers joined in memory, calls on both sides, the frame table."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from isthmus.errors import ProtocolError
from isthmus.runtime.dispatch import Dispatcher
from isthmus.wire import protocol as P
from isthmus.wire.call import Call
from isthmus.wire.peer import Peer, memory_pair

DOCS = Path(__file__).parents[2] / "docs" / "architecture.md"


def test_docs_frame_table_is_the_code_table() -> None:
    text = DOCS.read_text()
    section = text[text.index("## The wire"):]
    rows = re.findall(r"^\| `([a-z]+)` \| ([^|]+) \| ([^|]+) \|$", section, flags=re.M)
    documented = {name: (direction.strip(), re.findall(r"`([a-z_]+)`", fields)) for name, direction, fields in rows}
    code = {name: (direction, P.frame_fields(name)) for name, (direction, _) in P.FRAMES.items()}
    assert documented == code


class Answers:
    """A tiny ASGI app: /echo returns the body's size and digest, /big streams n bytes, /slow waits."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/p/echo":
            digest, size, more = hashlib.sha256(), 0, True
            while more:
                message = await receive()
                digest.update(message.get("body", b""))
                size += len(message.get("body", b""))
                more = message.get("more_body", False)
            body = f"{size} {digest.hexdigest()}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-n", b"1")]})
            await send({"type": "http.response.body", "body": body})
        elif path == "/p/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            block = b"z" * (512 * 1024)
            for _ in range(20):
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/p/slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        else:
            raise RuntimeError("boom")


def joined(app: Any) -> tuple[Peer, Peer]:
    client, server = memory_pair("t")
    server.handlers.update(Dispatcher(app, lambda plugin: None).handlers(server))

    def on_response(f: P.Frame) -> None:
        call = client.calls.get(f["id"])
        if isinstance(call, Call):
            call.on_response(f)

    def on_cancel(f: P.Frame) -> None:
        call = client.calls.get(f["id"])
        if isinstance(call, Call):
            call.on_cancel()

    client.handlers.update({P.RESPONSE: on_response, P.CANCEL: on_cancel})
    client.start()
    server.start()
    return client, server


async def ask(client: Peer, rid: int, path: str, body: bytes = b"", streamed: bool = False) -> tuple[P.Frame, bytes]:
    call = Call(client, rid, 5.0)
    try:
        out = call.send({"t": P.REQUEST, "m": "POST", "p": path, "q": b"", "h": [], "pr": None,
                         **({} if streamed else {"b": body})}, streamed)
        if out is not None:
            await out.write(body, end=True)
        response = await asyncio.wait_for(call.response, 5)
        call.answered = True
        data = response.get("b") or b""
        if response.get("s"):
            stream = call.body()
            assert stream is not None
            parts = []
            while (chunk := await stream.read()) is not None:
                parts.append(chunk)
            data = b"".join(parts)
        return response, data
    finally:
        call.finish()


@pytest.mark.asyncio
async def test_calls_inline_and_streamed_both_ways() -> None:
    client, server = joined(Answers())
    response, data = await ask(client, 1, "/p/echo", b"hello")
    assert response["st"] == 200 and data == f"5 {hashlib.sha256(b'hello').hexdigest()}".encode()
    big = bytes(range(256)) * 4096 * 3  # 3 MiB: streamed up
    response, data = await ask(client, 2, "/p/echo", big, streamed=True)
    assert data == f"{len(big)} {hashlib.sha256(big).hexdigest()}".encode()
    response, data = await ask(client, 3, "/p/big")
    assert response.get("s") and len(data) == 20 * 512 * 1024
    response, data = await ask(client, 4, "/p/other")
    assert response["st"] == 500 and b"boom" in data
    assert client.calls == {} and server.calls == {}  # every call left both tables
    assert not client.inbound and not client.outbound and not server.inbound and not server.outbound
    await client.close()
    await server.close()


@pytest.mark.asyncio
async def test_cancel_reaches_the_task_and_closing_fails_open_calls() -> None:
    app = Answers()
    client, server = joined(app)
    call = Call(client, 9, 5.0)
    call.send({"t": P.REQUEST, "m": "GET", "p": "/p/slow", "q": b"", "h": [], "pr": None, "b": b""}, False)
    await asyncio.sleep(0.05)
    assert 9 in server.calls
    call.finish()  # unanswered: sends cancel
    await asyncio.wait_for(app.cancelled.wait(), 2)
    await asyncio.sleep(0.05)
    assert server.calls == {} and client.calls == {}
    pending = Call(client, 10, 5.0)
    pending.send({"t": P.REQUEST, "m": "GET", "p": "/p/slow", "q": b"", "h": [], "pr": None, "b": b""}, False)
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending.response, 1)
    await server.close()


@pytest.mark.asyncio
async def test_bad_frames_and_failing_handlers_end_only_the_link() -> None:
    sent: list[bytes] = []

    async def capture(data: bytes) -> None:
        sent.append(data)

    peer = Peer(capture, "x")
    with pytest.raises(ProtocolError):
        peer.receive(b"\xc1")
    with pytest.raises(ProtocolError, match="unexpected"):
        peer.receive(P.pack([{"t": P.NOTIFY}]))
    peer.handlers[P.NOTIFY] = lambda f: f["missing"]
    with pytest.raises(ProtocolError, match="malformed"):
        peer.receive(P.pack([{"t": P.NOTIFY}]))
    failures: list[BaseException] = []
    peer.on_failure = failures.append

    async def broken(frame: P.Frame) -> None:
        raise RuntimeError("handler bug")

    peer.handlers[P.TOPOLOGY] = broken
    peer.receive(P.pack([{"t": P.TOPOLOGY, "edges": {}}]))  # does not raise: runs beside the reader
    await asyncio.sleep(0.01)
    assert [str(f) for f in failures] == ["handler bug"]
    await peer.close()


@pytest.mark.asyncio
async def test_a_slow_async_handler_does_not_hold_up_later_frames() -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def nothing(data: bytes) -> None:
        return None

    peer = Peer(nothing, "x")

    async def slow(frame: P.Frame) -> None:
        await release.wait()
        seen.append("topology")

    peer.handlers[P.TOPOLOGY] = slow
    peer.handlers[P.SHUTDOWN] = lambda f: seen.append("shutdown")  # type: ignore[func-returns-value]
    peer.receive(P.pack([{"t": P.TOPOLOGY, "edges": {}}, {"t": P.SHUTDOWN, "reason": "x"}]))
    assert seen == ["shutdown"]
    release.set()
    await asyncio.sleep(0.01)
    assert seen == ["shutdown", "topology"]
    await peer.close()
