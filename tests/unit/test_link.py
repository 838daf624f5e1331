"""Frames and flow control without sockets."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from isthmus.errors import ProtocolError
from isthmus.wire import protocol as P
from isthmus.wire.peer import Peer, _split


def test_unpack_rejects_garbage() -> None:
    for bad in (b"\xc1", msgpack.packb({"t": "req"}), msgpack.packb([1]), msgpack.packb([{"t": "zzz"}])):
        with pytest.raises(ProtocolError):
            P.unpack(bad)
    frames = [{"t": P.PING, "ts": 1.0}, {"t": P.CHUNK, "id": 3, "b": b"\x00\xff", "end": True}]
    assert P.unpack(P.pack(frames)) == frames


def test_split_keeps_messages_near_target() -> None:
    frames = [{"t": P.CHUNK, "id": 1, "b": b"x" * (P.CHUNK_SIZE)} for _ in range(10)]
    messages = _split(frames)
    assert sum(len(m) for m in messages) == 10
    assert all(sum(len(f["b"]) for f in m) <= P.MESSAGE_TARGET for m in messages)


@pytest.mark.asyncio
async def test_streams_respect_credit_and_deliver_everything() -> None:
    """Two links joined back to back: the sender never runs more than the window ahead."""
    a_out: asyncio.Queue[bytes] = asyncio.Queue()
    b_out: asyncio.Queue[bytes] = asyncio.Queue()

    async def a_send(data: bytes) -> None:
        await a_out.put(data)

    async def b_send(data: bytes) -> None:
        await b_out.put(data)

    a, b = Peer(a_send, "a"), Peer(b_send, "b")
    a.start()
    b.start()
    max_in_flight = 0
    received = bytearray()
    inbound = b.open_inbound(7)
    outbound = a.open_outbound(7)

    async def pump(src: asyncio.Queue[bytes], dst: Peer) -> None:
        nonlocal max_in_flight
        while True:
            dst.receive(await src.get())
            max_in_flight = max(max_in_flight, inbound.buffered)

    pumps = [asyncio.create_task(pump(a_out, b)), asyncio.create_task(pump(b_out, a))]
    data = bytes(range(256)) * 4096 * 40  # 40 MiB = 40 chunks: five windows

    async def reader() -> None:
        while (chunk := await inbound.read()) is not None:
            received.extend(chunk)
            await asyncio.sleep(0.001)  # a slow consumer

    read_task = asyncio.create_task(reader())
    await outbound.write(data, end=True)
    await asyncio.wait_for(read_task, 10)
    assert bytes(received) == data
    assert max_in_flight <= P.CREDIT_WINDOW
    assert outbound.waits > 0  # the sender really ran out of credit and waited for the reader
    assert max_in_flight >= P.CREDIT_WINDOW // 2  # and the window was used, not a trickle
    for t in pumps:
        t.cancel()
    await a.close()
    await b.close()


@pytest.mark.asyncio
async def test_close_fails_open_streams() -> None:
    async def send(data: bytes) -> None:
        return None

    link = Peer(send, "x")
    link.start()
    inbound = link.open_inbound(1)
    waiter = asyncio.create_task(inbound.read())
    await asyncio.sleep(0)
    await link.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiter, 1)
