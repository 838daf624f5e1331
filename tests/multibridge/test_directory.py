"""The edge directory against a real redis-server: two or three bridges' directories on one Redis."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from isthmus.bridge.auth import digest
from isthmus.bridge.directory import EdgeDirectory
from isthmus.testing.redis import RedisServer
from tests.multibridge.conftest import eventually

LEASE = 1.0  # short leases keep the expiry tests quick
_ns = itertools.count()


class Recorder:
    def __init__(self, directory: EdgeDirectory) -> None:
        self.lost: list[tuple[str, str]] = []
        self.joined: dict[str, Any] = {}
        self.left: list[str] = []
        directory.on_lost = lambda name, conn: self.lost.append((name, conn))
        directory.on_change = self.changed

    def changed(self, joined: dict[str, Any], left: list[str]) -> None:
        self.joined.update(joined)
        self.left.extend(left)


@asynccontextmanager
async def bridges(url: str, *ids: str, lease: float = LEASE) -> AsyncIterator[list[EdgeDirectory]]:
    namespace = f"t{next(_ns)}"
    dirs = [EdgeDirectory(url, bid, f"http://127.0.0.1:{9000 + i}", lease=lease, namespace=namespace,
                          backoff=(0.05, 0.5)) for i, bid in enumerate(ids)]
    try:
        yield dirs
    finally:
        for d in dirs:
            await d.stop()


def summary(host: str = "login1") -> dict[str, Any]:
    return {"plugins": {"sysinfo": {"version": "1"}}, "host": host}


@pytest.mark.asyncio
async def test_claim_is_seen_by_the_other_bridge_and_the_newest_claim_wins(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B") as (a, b):
        ra, rb = Recorder(a), Recorder(b)
        await a.start()
        await b.start()
        assert a.healthy and b.healthy and a.problem is None

        first = await a.claim("hpc1", "c1", summary(), digest("key-1"))
        assert first.seq is not None and first.current and first.previous is None
        took = await eventually(lambda: b.holder("hpc1") is not None, 1.0, "B sees A's claim")
        held = b.holder("hpc1")
        assert held is not None and held.bridge_id == "A" and held.url == "http://127.0.0.1:9000"
        assert held.summary == summary() and held.conn_id == "c1"
        assert a.holder("hpc1") is None  # holder() is about the other bridges
        assert took < 1.0
        assert b.verify_resume("hpc1", "key-1") and not b.verify_resume("hpc1", "key-2")
        assert not b.verify_resume("nope", "key-1")
        await eventually(lambda: "hpc1" in rb.joined, 1.0, "B's on_change(joined)")
        assert dict(b.remote_edges()) == {"hpc1": held}

        second = await b.claim("hpc1", "c2", summary("login2"), digest("key-2"))
        assert second.previous == held and second.current
        await eventually(lambda: ra.lost == [("hpc1", "c1")], 1.0, "A's on_lost")
        assert a.own_edges() == {} and b.own_edges() == {"hpc1": "c2"}
        moved = a.holder("hpc1")
        assert moved is not None and moved.bridge_id == "B" and moved.summary["host"] == "login2"
        assert b.holder("hpc1") is None
        await eventually(lambda: "hpc1" in rb.left, 1.0, "B's on_change(left)")
        assert rb.lost == []

        # A new summary for the same connection (the edge's manifest changed) reaches the others.
        await b.claim("hpc1", "c2", {"plugins": {}, "host": "login2"}, digest("key-2"))
        await eventually(lambda: ra.joined.get("hpc1") == {"plugins": {}, "host": "login2"}, 1.0, "A's on_change")
        updated = a.holder("hpc1")
        assert updated is not None and updated.summary["plugins"] == {} and ra.lost == [("hpc1", "c1")]


@pytest.mark.asyncio
async def test_simultaneous_claims_agree_on_one_winner(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B") as (a, b):
        ra, rb = Recorder(a), Recorder(b)
        await a.start()
        await b.start()
        names = [f"e{i}" for i in range(50)]
        await asyncio.gather(*(a.claim(n, "ca", summary(), "x") for n in names),
                             *(b.claim(n, "cb", summary(), "y") for n in names))

        def settled() -> bool:
            return all((n in a.own_edges()) != (n in b.own_edges()) for n in names)

        await eventually(settled, 2.0, "each name held by exactly one bridge")
        client = redis.Redis.from_url(server.url)
        try:
            for n in names:
                holder = "A" if n in a.own_edges() else "B"
                other = b if holder == "A" else a
                remote = other.holder(n)
                assert remote is not None and remote.bridge_id == holder
                stored = client.hget(f"{a._ns}:edges", n)
                assert isinstance(stored, bytes) and stored.split(b" ")[1].decode() == holder
        finally:
            client.close()
        assert len(ra.lost) + len(rb.lost) == len(names)


@pytest.mark.asyncio
async def test_release_only_by_the_holding_connection(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B") as (a, b):
        await a.start()
        await b.start()
        await a.claim("hpc2", "c1", summary(), "d")
        await eventually(lambda: b.holder("hpc2") is not None, 1.0)
        assert not await a.release("hpc2", "c-old")  # not the connection that holds it
        assert not await b.release("hpc2", "c1")  # not B's entry
        await asyncio.sleep(0.1)
        assert b.holder("hpc2") is not None and a.own_edges() == {"hpc2": "c1"}
        # The same edge reconnecting to the same bridge: the old connection's release is a no-op.
        await a.claim("hpc2", "c1b", summary(), "d")
        assert not await a.release("hpc2", "c1")
        await asyncio.sleep(0.1)
        remote = b.holder("hpc2")
        assert remote is not None and remote.conn_id == "c1b" and a.own_edges() == {"hpc2": "c1b"}
        assert await a.release("hpc2", "c1b")
        await eventually(lambda: b.holder("hpc2") is None, 1.0, "B sees the release")
        assert a.own_edges() == {}

        # After a takeover the old holder's release leaves the new entry alone.
        await a.claim("hpc3", "c1", summary(), "d")
        await eventually(lambda: b.holder("hpc3") is not None, 1.0)
        await b.claim("hpc3", "c2", summary(), "d")
        await eventually(lambda: a.holder("hpc3") is not None, 1.0)
        assert not await a.release("hpc3", "c1")
        await asyncio.sleep(0.1)
        assert b.own_edges() == {"hpc3": "c2"}
        remote = a.holder("hpc3")
        assert remote is not None and remote.bridge_id == "B"


@pytest.mark.asyncio
async def test_a_killed_bridge_loses_its_edges_within_the_lease(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B", "C") as (a, b, c):
        await a.start()
        await b.start()
        for i in range(3):
            await a.claim(f"k{i}", "c", summary(), "d")
        await eventually(lambda: len(b.remote_edges()) == 3, 1.0)
        await a.abandon()  # as kill -9: no release, no goodbye; the lease stops being renewed
        gone = await eventually(lambda: not b.remote_edges(), LEASE + 2.0, "A's edges expire on B")
        assert gone <= LEASE + 1.0  # the lease, plus at most one check interval (lease/5) and scheduling
        client = redis.Redis.from_url(server.url)
        try:
            await eventually(lambda: client.hlen(f"{b._ns}:edges") == 0, 1.0, "the entries are removed")
        finally:
            client.close()
        # A bridge that starts later never sees them.
        await c.start()
        assert not c.remote_edges()


@pytest.mark.asyncio
async def test_a_stalled_bridge_comes_back_and_the_newer_claim_keeps_its_edge(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B") as (a, b):
        ra = Recorder(a)
        await a.start()
        await b.start()
        await a.claim("st1", "ca", summary(), "d")
        await a.claim("st2", "ca", summary(), "d")
        await eventually(lambda: len(b.remote_edges()) == 2, 1.0)

        resume = asyncio.Event()
        renew = a._renew

        async def stalled(client: Any) -> bool:  # A's lease refresh hangs (a stalled process)
            await resume.wait()
            return await renew(client)

        a._renew = stalled  # type: ignore[method-assign]
        await eventually(lambda: not b.remote_edges(), LEASE + 2.0, "B takes A for dead")
        await b.claim("st2", "cb", summary(), "d")  # meanwhile the edge st2 reconnected to B
        await eventually(lambda: ra.lost == [("st2", "ca")], 1.0, "A hears that st2 moved")
        resume.set()
        await eventually(lambda: b.holder("st1") is not None, 2.0, "A announces its edges again")
        assert a.own_edges() == {"st1": "ca"} and b.own_edges() == {"st2": "cb"}
        held = a.holder("st2")
        assert held is not None and held.bridge_id == "B"


@pytest.mark.asyncio
async def test_stale_entries_of_a_dead_bridge_are_ignored_at_start(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B", lease=30.0) as (a, b):
        await a.start()
        await a.claim("old", "c", summary(), "d")
        await a.abandon()
        client = redis.Redis.from_url(server.url)
        try:
            client.delete(f"{a._ns}:bridge:A")  # its lease expired
            await b.start()
            assert b.holder("old") is None
            await eventually(lambda: client.hlen(f"{a._ns}:edges") == 0, 1.0, "the stale entry is removed")
        finally:
            client.close()


@pytest.mark.asyncio
async def test_a_stopped_bridge_is_forgotten_at_once(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B", lease=30.0) as (a, b):
        rb = Recorder(b)
        await a.start()
        await b.start()
        await a.claim("s1", "c", summary(), "d")
        await a.claim("s2", "c", summary(), "d")
        await eventually(lambda: len(b.remote_edges()) == 2, 1.0)
        await a.stop()
        took = await eventually(lambda: not b.remote_edges(), 1.0, "B forgets A's edges")
        assert took < 0.5  # not the 30 s lease
        await eventually(lambda: sorted(rb.left) == ["s1", "s2"], 1.0)


@pytest.mark.asyncio
async def test_probe_asks_the_holding_bridge(server: RedisServer) -> None:
    async with bridges(server.url, "A", "B") as (a, b):
        await a.start()
        await b.start()
        asked: list[str] = []

        async def prober(name: str) -> bool:
            asked.append(name)
            if name == "hung":
                await asyncio.sleep(10)
            return name == "alive"

        a.set_prober(prober)
        for name in ("alive", "dead", "hung"):
            await a.claim(name, "c", summary(), "d")
        await eventually(lambda: len(b.remote_edges()) == 3, 1.0)
        assert await b.probe("alive")
        assert not await b.probe("dead")
        began = time.monotonic()
        assert not await b.probe("hung", timeout=0.3)
        assert time.monotonic() - began < 0.3 + 1.0 + 0.5  # the prober's time, the slack, scheduling
        assert not await b.probe("unknown")
        assert asked == ["alive", "dead", "hung"]

        await a.abandon()  # killed: nobody listens on its channel any more
        began = time.monotonic()
        assert not await b.probe("alive", timeout=5.0)
        assert time.monotonic() - began < 0.5  # known at once, not after the timeout


@pytest.mark.asyncio
async def test_redis_restart_both_recover_and_own_claims_come_back() -> None:
    with RedisServer() as server:
        async with bridges(server.url, "A", "B", lease=2.0) as (a, b):
            ra, rb = Recorder(a), Recorder(b)
            await a.start()
            await b.start()
            await a.claim("r1", "c1", summary(), digest("k1"))
            await b.claim("r2", "c2", summary(), "d")
            await b.claim("r3", "c3", summary(), "d")
            await eventually(lambda: a.holder("r2") is not None and b.holder("r1") is not None, 1.0)

            server.stop()
            await eventually(lambda: not a.healthy and not b.healthy, 3.0, "both notice")
            assert a.problem and "Redis" in a.problem
            # The cache keeps serving; claims and releases wait for Redis.
            held = b.holder("r1")
            assert held is not None and held.bridge_id == "A"
            pending = await a.claim("r4", "c4", summary(), "d")
            assert pending.seq is None and pending.current
            assert not await b.release("r3", "c3")
            assert not await b.probe("r1")

            server.start()  # empty: nothing was saved
            await eventually(lambda: a.healthy and b.healthy, 5.0, "both reconnect")
            await eventually(lambda: all(b.holder(n) is not None for n in ("r1", "r4")), 2.0, "A's claims on B")
            await eventually(lambda: a.holder("r2") is not None and a.holder("r3") is None, 2.0, "B's on A")
            assert b.verify_resume("r1", "k1")
            client = redis.Redis.from_url(server.url)
            try:
                stored = {k.decode() if isinstance(k, bytes) else k for k in client.hkeys(f"{a._ns}:edges")}
                assert stored == {"r1", "r2", "r4"}
                assert client.exists(f"{a._ns}:bridge:A") and client.exists(f"{a._ns}:bridge:B")
            finally:
                client.close()
            assert ra.lost == [] and rb.lost == []
            # Still consistent afterwards: a takeover works as before.
            await b.claim("r1", "c9", summary(), "d")
            await eventually(lambda: ra.lost == [("r1", "c1")], 1.0)


@pytest.mark.asyncio
async def test_start_without_redis_then_connect() -> None:
    server = RedisServer()
    d = EdgeDirectory(server.url, "A", "http://127.0.0.1:9000", lease=1.0, backoff=(0.05, 0.3))
    try:
        began = time.monotonic()
        await d.start(wait=2.0)
        assert time.monotonic() - began < 2.5
        assert not d.healthy and d.problem
        claim = await d.claim("x", "c", summary(), "d")
        assert claim.seq is None
        server.start()
        await eventually(lambda: d.healthy, 5.0, "connects when Redis appears")
        client = redis.Redis.from_url(server.url)
        try:
            await eventually(lambda: client.hexists("isthmus:edges", "x"), 1.0, "the claim is written")
        finally:
            client.close()
    finally:
        await d.stop()
        server.__exit__(None, None, None)


@pytest.mark.asyncio
async def test_many_edges_batch_and_a_late_bridge_scans_them(server: RedisServer) -> None:
    n = 2000
    async with bridges(server.url, "A", "B", "C", lease=5.0) as (a, b, c):  # three directories in one busy loop
        await a.start()
        await b.start()
        began = time.monotonic()
        await asyncio.gather(*(a.claim(f"m{i}", "c", summary(), "d") for i in range(n)))
        claimed = time.monotonic() - began
        await eventually(lambda: len(b.remote_edges()) == n, 5.0, "B sees them all")
        await c.start()
        assert len(c.remote_edges()) == n
        assert claimed < 5.0, claimed
