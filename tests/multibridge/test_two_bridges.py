"""Two real bridges sharing a real Redis, one real edge (on bridge A) that may use either.

A client of bridge B reaches the edge held by A (small and 50 MB bodies, a deadline, a
cancel), sees A's events with A's ids, uses tokens made in Redis; a killed bridge's edge is
served by the other within 10 s, and an event stream resumes there with Last-Event-ID;
Redis going away and coming back leaves both bridges serving, then healthy.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from isthmus.bridge.redis_tokens import create_token, revoke_token
from isthmus.sdk.events_client import parse_sse
from isthmus.testing.bridges import Bridges
from isthmus.testing.stack import poll_for
from tests.conftest import support_env

PLUGINS = ["sysinfo", "testplugins:PluginProbe"]
MB50 = 50 * 1024 * 1024


def _bridges(markers: Path) -> Bridges:
    return Bridges(2, plugins=PLUGINS, env=support_env(PROBE_MARKERS=str(markers)))


def _listed(b: Bridges, i: int, name: str = "test") -> Any:
    edges = b.http(i).get("/edge/list", params={"view": "summary"}).json()["edges"]
    return edges.get(name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridges]:
    markers = tmp_path_factory.mktemp("markers")
    with _bridges(markers) as b:
        b.markers = markers  # type: ignore[attr-defined]
        poll_for(lambda: _listed(b, 1), 10, what="bridge B lists the edge A holds")
        yield b


class Events:
    """An SSE reader on a thread: (id, payload) of every event, in order."""

    def __init__(self, url: str, token: str, last_id: str | None = None, query: str = "") -> None:
        self.items: list[tuple[str | None, dict[str, Any]]] = []
        self.connected = threading.Event()
        self._stop = False
        headers = {"Authorization": f"Bearer {token}"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        self._thread = threading.Thread(target=self._run, args=(f"{url}/events{query}", headers), daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "event stream did not open"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=60)) as resp:
                self.connected.set()
                for event_id, _kind, data in parse_sse(resp.iter_lines()):
                    self.items.append((event_id, orjson.loads(data)))
                    if self._stop:
                        return
        except httpx.HTTPError:
            pass

    def floods(self) -> list[tuple[str | None, int]]:
        return [(eid, p["data"]["data"]["i"]) for eid, p in self.items
                if p.get("topic") == "notification" and p["data"]["topic"] == "flood"]

    def close(self) -> None:
        self._stop = True


def test_b_lists_the_edge_of_a_with_its_full_manifests(pair: Bridges) -> None:
    on_a = pair.http(0).get("/edge/list").json()["edges"]["test"]
    poll_for(lambda: pair.http(1).get("/edge/list").json()["edges"]["test"]["plugins"]["sysinfo"].get("ui_config"),
             10, what="B reads the manifests of A's edge from Redis")
    on_b = pair.http(1).get("/edge/list").json()["edges"]["test"]
    assert on_b["plugins"] == on_a["plugins"] and on_b["conn"] == on_a["conn"]
    assert on_b["bridge"] != "" and "bridge" not in on_a  # B says who holds it


def test_a_client_of_b_calls_the_edge_held_by_a(pair: Bridges) -> None:
    assert pair.http(0).get("/test/probe/whoami").status_code == 200
    with pair.http(1, timeout=60) as b:
        assert b.get("/test/probe/whoami").json() == {"name": "admin", "role": "admin"}  # the caller's principal
        assert b.post("/test/probe/echo", content=b"hello").json() == {
            "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
        # 50 MB up, streamed from a generator (never whole in this process either)
        block = bytes(range(256)) * 4096  # 1 MiB
        expected = hashlib.sha256()
        for _ in range(50):
            expected.update(block)

        def body() -> Iterator[bytes]:
            for _ in range(50):
                yield block

        assert b.post("/test/probe/echo", content=body()).json() == {"size": MB50, "sha256": expected.hexdigest()}
        # 50 MB down
        got = 0
        with b.stream("GET", "/test/probe/stream", params={"n": MB50}) as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_bytes():
                got += len(chunk)
        assert got == MB50
        # a deadline: the edge's work is past it -> 504 from the holder, through B
        t0 = time.monotonic()
        late = b.get("/test/probe/sleep", params={"s": 10}, headers={"x-isthmus-deadline": "1"})
        assert late.status_code == 504 and time.monotonic() - t0 < 8
    # a cancel: the client leaves B; A's edge-side work is cancelled
    with pair.http(1, timeout=1) as b, pytest.raises(httpx.ReadTimeout):
        b.get("/test/probe/sleep", params={"s": 30, "tag": "relayed"})
    markers: Path = pair.markers  # type: ignore[attr-defined]
    poll_for(lambda: (markers / "cancelled-relayed").exists(), 10, what="edge-side cancel of a relayed call")


def test_events_from_the_edge_reach_both_bridges_with_the_same_ids(pair: Bridges) -> None:
    token = pair.stacks[0].admin_token
    on_a = Events(pair.urls[0], token, query="?topic=flood")
    on_b = Events(pair.urls[1], token, query="?topic=flood")
    try:
        assert pair.http(1).post("/test/probe/broadcast", params={"n": 5}).json() == {"sent": 5}
        poll_for(lambda: len(on_a.floods()) == 5 and len(on_b.floods()) == 5, 10, what="5 events on each bridge")
        assert on_a.floods() == on_b.floods()
        assert [i for _, i in on_a.floods()] == [0, 1, 2, 3, 4]
        assert all(eid and "-" in eid for eid, _ in on_a.floods())  # Redis stream ids: global
    finally:
        on_a.close()
        on_b.close()


def test_tokens_made_in_redis_work_on_both_and_revocation_reaches_both(pair: Bridges) -> None:
    token, entry = create_token(pair.redis.url, "viewer", name="shared-viewer")

    def status(i: int) -> int:
        return pair.http(i, token).get("/auth/whoami").status_code

    poll_for(lambda: status(0) == 200 and status(1) == 200, 5, what="the new token works on both bridges")
    assert pair.http(1, token).post("/test/probe/echo", content=b"x").status_code == 403  # a viewer reads only
    assert revoke_token(pair.redis.url, entry["id"])
    t0 = time.monotonic()
    poll_for(lambda: status(0) == 401 and status(1) == 401, 5, what="revoked on both bridges")
    assert time.monotonic() - t0 < 2.5


def test_a_killed_bridge_edge_is_served_by_the_other_and_events_resume_there(tmp_path: Path) -> None:
    with _bridges(tmp_path) as b:
        token = b.stacks[0].admin_token
        poll_for(lambda: _listed(b, 1), 10, what="bridge B lists the edge")
        reader = Events(b.urls[0], token, query="?topic=flood")
        assert b.http(0).post("/test/probe/broadcast", params={"n": 5}).status_code == 200
        poll_for(lambda: len(reader.floods()) == 5, 10, what="5 events on A")
        reader.close()
        seen = reader.floods()
        resume_from = seen[1][0]  # as if the client had read only two before A died
        assert resume_from is not None
        b.kill_bridge(0)
        t0 = time.monotonic()
        poll_for(lambda: b.http(1).get("/test/probe/whoami").status_code == 200, 10,
                 what="the edge served through B")
        assert time.monotonic() - t0 < 10
        resumed = Events(b.urls[1], token, last_id=resume_from, query="?topic=flood")
        try:
            poll_for(lambda: len(resumed.floods()) >= 3, 10, what="the missed events replayed on B")
            assert resumed.floods()[:3] == seen[2:]  # the same ids, nothing lost, nothing twice
        finally:
            resumed.close()


def test_redis_going_away_leaves_both_serving_and_both_recover(pair: Bridges) -> None:
    def health(i: int) -> dict[str, Any]:
        data: dict[str, Any] = pair.http(i).get("/healthz").json()
        return data

    assert health(0)["status"] == "ok" and health(1)["status"] == "ok"
    pair.redis.stop()
    try:
        poll_for(lambda: health(0)["status"] == "degraded" and health(1)["status"] == "degraded", 10,
                 what="both bridges degraded")
        assert health(1)["problems"]  # an authenticated caller is told what is wrong
        assert httpx.get(f"{pair.urls[1]}/healthz").json() == {"status": "degraded"}  # others are not
        assert pair.http(0).get("/test/probe/whoami").status_code == 200  # A still serves its edge
    finally:
        pair.redis.start()
    poll_for(lambda: health(0)["status"] == "ok" and health(1)["status"] == "ok", 20, what="both healthy again")
    poll_for(lambda: _listed(pair, 1), 10, what="B lists A's edge again")
    assert pair.http(1).get("/test/probe/whoami").status_code == 200  # relayed again
