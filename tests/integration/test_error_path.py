"""The one error path through a real bridge and edge: every kind of route answers errors as
JSON ``{"detail": ...}`` with the mapped status, and the Python client sees the same tree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from isthmus import BridgeUnreachable, ClientError
from isthmus.testing.stack import Stack, free_port
from tests.conftest import support_env

# fault kind (tests/support/testplugins.py) -> status
KINDS = {"plugin": 418, "session": 404, "scheduler": 502, "http": 409, "value": 400, "recursion": 400,
         "overflow": 422, "config": 500, "boom": 500}


@pytest.fixture(scope="module")
def faults_stack() -> Iterator[Stack]:
    """An edge 'test' with the faults plugin, and the same plugin hosted by the bridge."""
    with Stack(plugins=["testplugins:PluginFaults"], bridge_plugins=["testplugins:PluginFaults"],
               env=support_env()) as stack:
        yield stack


@pytest.mark.parametrize("where", ["test", "bridge"])
@pytest.mark.parametrize(("kind", "status"), sorted(KINDS.items()))
def test_add_route_and_register_routes_answer_alike(faults_stack: Stack, where: str, kind: str,
                                                    status: int) -> None:
    with faults_stack.http() as http:
        added = http.get(f"/{where}/faults/raise/{kind}")
        routed = http.get(f"/{where}/faults/r/raise/{kind}")
    for resp in (added, routed):
        assert resp.status_code == status, (resp.request.url, resp.text)
        assert resp.headers["content-type"] == "application/json"
        assert set(resp.json()) == {"detail"} and "Traceback" not in resp.text
    assert added.json() == routed.json()


def test_plugin_error_418_from_register_routes(faults_stack: Stack) -> None:
    with faults_stack.http() as http:
        resp = http.get("/test/faults/r/raise/plugin")
    assert resp.status_code == 418
    assert resp.json() == {"detail": {"message": "I'm a teapot", "shape": "short and stout"}}


def test_validation_errors_never_echo_the_request(faults_stack: Stack) -> None:
    with faults_stack.http() as http:
        resp = http.post("/test/faults/r/typed", params={"count": "secret-in-query"},
                         json={"n": "secret-in-body"})
        ok = http.post("/test/faults/r/typed", params={"count": "2"}, json={"n": 3})
    assert resp.status_code == 422 and "secret" not in resp.text
    assert [p["loc"] for p in resp.json()["detail"]] == [["query", "count"], ["body", "n"]]
    assert all(set(p) == {"type", "loc", "msg"} for p in resp.json()["detail"])
    assert ok.json() == {"count": 2, "body": {"n": 3}}


def test_unexpected_errors_are_500_json_and_logged_with_traceback(faults_stack: Stack) -> None:
    with faults_stack.http() as http:
        resp = http.get("/test/faults/r/raise/boom")
        missing = http.get("/test/faults/no/such/route")
    assert resp.status_code == 500 and resp.json() == {"detail": "faults failed: RuntimeError: disk on fire"}
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert faults_stack.workdir is not None
    log = (faults_stack.workdir / "edge.log").read_text(errors="replace")
    assert "Traceback" in log and "RuntimeError: disk on fire" in log


@pytest.mark.parametrize(("kind", "status"), [("failed", 502), ("missing", 503), ("timeout", 504)])
def test_scheduler_failures_answer_the_mapped_status(faults_stack: Stack, kind: str, status: int) -> None:
    with faults_stack.http() as http:
        for path in (f"/test/faults/scheduler/{kind}", f"/test/faults/r/scheduler/{kind}"):
            resp = http.get(path)
            assert resp.status_code == status, path
            detail = resp.json()["detail"]
            assert set(detail) == {"message", "command", "stderr"} and detail["command"], detail


def test_the_client_sees_the_status_and_detail(faults_stack: Stack) -> None:
    faults = faults_stack.client().get_edge_client("test").get_plugin("faults", register=False)
    with pytest.raises(ClientError) as err:
        faults._get("r/scheduler/missing")
    assert err.value.status_code == 503
    assert isinstance(err.value.detail, dict) and err.value.detail["command"][0] == "isthmus-no-such-scheduler-cli"
    assert "not found on PATH" in str(err.value)
    with pytest.raises(ClientError) as teapot:
        faults._get("r/raise/plugin")
    assert teapot.value.status_code == 418 and "I'm a teapot" in str(teapot.value)


def test_the_client_against_a_closed_port() -> None:
    from isthmus import BridgeClient

    with BridgeClient(url=f"http://127.0.0.1:{free_port()}", token="t", timeout=2) as client, \
            pytest.raises(BridgeUnreachable):
        client.get_edge_client("test").get_plugin("faults")
