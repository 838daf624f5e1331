"""The whole request path with real bridge and edge processes on loopback."""

from __future__ import annotations

import hashlib
import threading
import time

import httpx
import pytest

from isthmus import BridgeClient, ClientError
from isthmus.testing.stack import Stack, poll_for
from tests.conftest import support_env


def test_edge_list_shape_and_plugin_client(probe_stack: Stack) -> None:
    client = probe_stack.client()
    edges = client.list_edges()
    plugins = edges["test"]["plugins"]
    assert set(plugins) == {"sysinfo", "probe"}
    assert plugins["probe"]["version"] == "9.9.9"
    assert plugins["sysinfo"]["title"] == "System info"
    assert plugins["sysinfo"]["ui_config"]["monitors"][0]["type"] == "metrics"
    sysinfo = client.get_edge_client("test").get_plugin("sysinfo")
    assert type(sysinfo).__name__ == "SysinfoClient"
    assert sysinfo.sid and sysinfo.sid.startswith("session.")
    info = sysinfo.info()  # type: ignore[attr-defined]
    assert info["cpu"]["threads"] >= 1 and info["memory"]["total"] > 0
    assert sysinfo.metrics()["memory_percent"] > 0  # type: ignore[attr-defined]
    with probe_stack.http() as http:
        assert http.post("/edge/list").json()["edges"].keys() == edges.keys()
        assert http.get("/test/sysinfo/homedir").json()["homedir"].startswith("/")


def test_method_query_body_and_principal_reach_the_plugin(probe_stack: Stack) -> None:
    with probe_stack.http() as http:
        got = http.get("/test/probe/query?a=1&b=x%20y", headers={"X-Thing": "42"}).json()
        assert got["query"] == "a=1&b=x+y" or got["query"] == "a=1&b=x%20y"
        assert got["path"] == "/probe/query"
        assert got["headers"]["x-thing"] == "42"
        assert http.get("/test/probe/whoami").json() == {"name": "admin", "role": "admin"}
        body = b"hello\x00world" * 10
        echo = http.post("/test/probe/echo", content=body).json()
        assert echo == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        # the client's credentials never reach the edge
        assert "authorization" not in {k.lower() for k in got["headers"]}


def test_large_bodies_stream_both_ways(probe_stack: Stack) -> None:
    data = bytes(range(256)) * 4096 * 5  # 5 MiB, above the inline limit
    with probe_stack.http(timeout=60) as http:
        echo = http.post("/test/probe/echo", content=data).json()
        assert echo == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

        def chunks():  # chunked transfer encoding, no content-length
            for i in range(0, len(data), 100_000):
                yield data[i:i + 100_000]

        echo = http.post("/test/probe/echo", content=chunks()).json()
        assert echo["size"] == len(data)
        resp = http.get("/test/probe/stream", params={"n": 3 * 1024 * 1024 + 7})
        assert resp.status_code == 200
        assert len(resp.content) == 3 * 1024 * 1024 + 7
        expected = (bytes(range(256)) * 256 * 49)[: 3 * 1024 * 1024 + 7]
        assert hashlib.sha256(resp.content).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_auto_routes_through_the_bridge(probe_stack: Stack) -> None:
    with probe_stack.http() as http:
        for route in ("version", "health", "list_sessions", "ui_config"):
            assert http.get(f"/test/probe/{route}").status_code == 200, route
        sid = http.post("/test/probe/register_session").json()["sid"]
        assert sid in http.get("/test/probe/list_sessions").json()["sessions"]
        assert http.post(f"/test/probe/ping/{sid}", json={"n": 3}).json() == {"pong": 3}
        assert http.post("/test/probe/ping/session.nope", json={}).status_code == 404
        assert http.post(f"/test/probe/unregister_session/{sid}").status_code == 200
        gone = http.post(f"/test/probe/ping/{sid}", json={})
        assert gone.status_code == 410 and "closed" in gone.json()["detail"]
        assert http.get("/nope/probe/version").status_code == 404
        assert http.get("/test/nope/version").status_code == 404


def test_roles_and_tokens(probe_stack: Stack) -> None:
    viewer = probe_stack.create_token("viewer", "vera")
    user = probe_stack.create_token("user", "ulla")
    assert httpx.get(f"{probe_stack.url}/edge/list").status_code == 401
    assert httpx.get(f"{probe_stack.url}/edge/list", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{probe_stack.url}/test/probe/version").status_code == 401
    with probe_stack.http(viewer) as http:
        assert http.get("/test/probe/version").status_code == 200
        assert http.get("/auth/whoami").json() == {"name": "vera", "role": "viewer"}
        refused = http.post("/test/probe/register_session")
        assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    with probe_stack.http(user) as http:
        assert http.post("/test/probe/register_session").status_code == 200
        assert http.get("/test/probe/whoami").json() == {"name": "ulla", "role": "user"}
        assert http.post("/edge/disconnect/test").status_code == 403
        assert http.post("/bridge/terminate").status_code == 403
    # the token file holds digests only
    stored = (probe_stack.workdir / "xdg-config" / "isthmus" / "tokens.json").read_text()
    assert viewer not in stored and user not in stored
    assert hashlib.sha256(viewer.encode()).hexdigest() in stored


def test_sessions_belong_to_their_owner(probe_stack: Stack) -> None:
    alice = probe_stack.create_token("user", "alice")
    bob = probe_stack.create_token("user", "bob")
    with probe_stack.http(alice) as a, probe_stack.http(bob) as b, probe_stack.http() as admin:
        sid = a.post("/test/probe/register_session").json()["sid"]
        assert b.post(f"/test/probe/ping/{sid}", json={"n": 1}).status_code == 404
        assert sid not in b.get("/test/probe/list_sessions").json()["sessions"]
        assert b.post(f"/test/probe/unregister_session/{sid}").status_code == 404
        assert a.post(f"/test/probe/ping/{sid}", json={"n": 1}).status_code == 200
        assert sid in admin.get("/test/probe/list_sessions").json()["sessions"]


def test_session_notifications_reach_only_owner_and_admins(probe_stack: Stack) -> None:
    alice_token = probe_stack.create_token("user", "alice2")
    bob_token = probe_stack.create_token("user", "bob2")
    seen: dict[str, list] = {"alice": [], "bob": [], "admin": []}
    clients = {"alice": probe_stack.client(alice_token), "bob": probe_stack.client(bob_token),
               "admin": probe_stack.client()}
    for who, c in clients.items():
        c.register_callback(plugin_name="probe", topic="probe",
                            callback=lambda e, p, t, d, who=who: seen[who].append(d))
        assert c.wait_for_events(10)
    probe = clients["alice"].get_edge_client("test").get_plugin("probe")
    probe._post(f"ping/{probe.sid}", json={"n": 77})
    poll_for(lambda: seen["alice"] and seen["admin"], 10, what="owner and admin see the event")
    time.sleep(0.3)
    assert seen["alice"] == [{"id": 77, "state": "PINGED"}]
    assert seen["admin"] == [{"id": 77, "state": "PINGED"}]
    assert seen["bob"] == []


def test_topology_callback_and_events_filters(probe_stack: Stack) -> None:
    client = probe_stack.client()
    flood: list[int] = []
    client.register_callback(edge_id="test", plugin_name="probe", topic="flood",
                             callback=lambda e, p, t, d: flood.append(d["i"]))
    assert client.wait_for_events(10)
    with probe_stack.http() as http:
        assert http.post("/test/probe/broadcast?n=500").json() == {"sent": 500}
    poll_for(lambda: len(flood) == 500, 10, what="500 notifications")
    assert flood == list(range(500))


def test_last_event_id_replays(probe_stack: Stack) -> None:
    with probe_stack.http() as http:
        http.post("/test/probe/broadcast?n=3")
        with http.stream("GET", "/events", params={"topic": "flood"}, headers={"Last-Event-ID": "0"},
                         timeout=5) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            ids, datas = [], []
            for line in resp.iter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                elif line.startswith("data: "):
                    datas.append(line)
                if len(ids) >= 3:
                    break
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert all('"topic":"flood"' in d for d in datas)


def test_client_gone_cancels_edge_work(probe_stack: Stack) -> None:
    markers = probe_stack.markers  # type: ignore[attr-defined]
    with pytest.raises(httpx.ReadTimeout), probe_stack.http(timeout=0.5) as http:
        http.get("/test/probe/sleep", params={"s": 30, "tag": "gone"})
    poll_for(lambda: (markers / "cancelled-gone").exists(), 10, what="edge-side cancellation")


def test_concurrent_requests_do_not_cross(probe_stack: Stack) -> None:
    results: dict[int, dict] = {}

    def work(i: int) -> None:
        with probe_stack.http() as http:
            body = f"request-{i}".encode() * (i + 1)
            results[i] = {"want": hashlib.sha256(body).hexdigest(),
                          "got": http.post("/test/probe/echo", content=body).json()["sha256"]}

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 32
    assert all(r["want"] == r["got"] for r in results.values())


def test_client_errors_carry_detail(probe_stack: Stack) -> None:
    client = probe_stack.client()
    with pytest.raises(ClientError) as err:
        client.get_edge_client("nowhere").get_plugin("sysinfo")
    assert err.value.status_code == 404 and "nowhere" in str(err.value)


def test_failed_plugin_is_reported_and_others_work(tmp_path) -> None:
    with Stack(plugins=["sysinfo", "testplugins:PluginBroken", "not_installed"], env=support_env()) as s:
        plugins = s.client().list_edges()["test"]["plugins"]
        assert "frobnicator" in plugins["broken"]["error"]
        assert "not_installed" in plugins and "no plugin named" in plugins["not_installed"]["error"]
        assert "error" not in plugins["sysinfo"]
        with s.http() as http:
            resp = http.get("/test/broken/version")
            assert resp.status_code == 503 and "frobnicator" in resp.json()["detail"]
            assert http.get("/test/sysinfo/version").status_code == 200


def test_bridge_hosted_plugins(tmp_path) -> None:
    with Stack(plugins=["sysinfo"], bridge_plugins=["testplugins:PluginProbe"], env=support_env()) as s:
        edges = s.client().list_edges()
        assert "probe" in edges["bridge"]["plugins"]
        with s.http() as http:
            assert http.get("/bridge/probe/version").json()["version"] == "9.9.9"
            assert http.get("/bridge/probe/whoami").json()["role"] == "admin"
            seen: list = []
            c = s.client()
            c.register_callback(edge_id="bridge", topic="flood", callback=lambda e, p, t, d: seen.append(d))
            assert c.wait_for_events(10)
            http.post("/bridge/probe/broadcast?n=2")
            poll_for(lambda: len(seen) == 2, 10, what="bridge plugin notifications")


def test_bridge_client_context_and_reconnecting_events(tmp_path) -> None:
    with Stack(plugins=["sysinfo"]) as s:
        topo: list[dict] = []
        with BridgeClient(url=s.url, token=s.admin_token) as client:
            client.register_topology_callback(lambda edges: topo.append(edges))
            assert client.wait_for_events(10)
            s.stop_edge()
            poll_for(lambda: any("test" not in t for t in topo), 10, what="edge gone event")
            s.start_edge()
            poll_for(lambda: "test" in topo[-1], 20, what="edge back event")


def test_topology_reaches_edge_and_bridge_plugins_and_threads_can_notify(tmp_path) -> None:
    with Stack(plugins=["testplugins:PluginProbe"], bridge_plugins=["testplugins:PluginProbe"],
               env=support_env()) as s, s.http() as http:
        poll_for(lambda: ["bridge", "test"] in http.get("/test/probe/topology").json()["seen"], 10,
                 what="edge plugin sees the topology")
        poll_for(lambda: ["bridge", "test"] in http.get("/bridge/probe/topology").json()["seen"], 10,
                 what="bridge-hosted plugin sees the edge arrive")
        s.stop_edge()
        poll_for(lambda: ["bridge"] in http.get("/bridge/probe/topology").json()["seen"], 10,
                 what="bridge-hosted plugin sees the edge leave")
        s.start_edge()
        seen: list = []
        c = s.client()
        c.register_callback(topic="threaded", callback=lambda e, p, t, d: seen.append((e, d)))
        assert c.wait_for_events(10)
        http.post("/test/probe/thread_notify")
        http.post("/bridge/probe/thread_notify")
        poll_for(lambda: len(seen) == 2, 10, what="notifications sent from threads")
        assert sorted(e for e, _ in seen) == ["bridge", "test"]
