"""The one error path: the exception tree, its HTTP answers on every kind of route, the
scheduler mapping, and the Python client's transport errors."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.testclient import TestClient

import isthmus
from isthmus import BridgeClient, schedulers
from isthmus import errors as E
from isthmus.config import AppConfig
from isthmus.runtime.host import PluginHost
from isthmus.schedulers.base import BatchSystem, Job, Node, Partition, run_command
from isthmus.sdk.http import map_exceptions, raise_for
from isthmus.sdk.plugin import error_response

# -- the tree ---------------------------------------------------------------------------------------

TREE: dict[type[BaseException], type[BaseException]] = {
    E.ConfigError: E.IsthmusError, E.ProtocolError: E.IsthmusError, E.PluginError: E.IsthmusError,
    E.SessionNotFound: E.PluginError, E.SessionClosed: E.PluginError, E.SchedulerError: E.IsthmusError,
    E.SchedulerUnavailable: E.SchedulerError, E.SchedulerTimeout: E.SchedulerError,
    E.ClientError: E.IsthmusError, E.TransportError: E.ClientError, E.BridgeUnreachable: E.TransportError,
    E.BridgeTimeout: E.TransportError,
}


def _drawing() -> list[tuple[int, str]]:
    """(column, class name) for each line of the tree drawn in errors.py's docstring."""
    names = {c.__name__ for c in TREE} | {"IsthmusError"}
    out = []
    for line in (E.__doc__ or "").splitlines():
        stripped = line.lstrip(" │├└─")
        if stripped and stripped.split()[0] in names:
            out.append((len(line) - len(stripped), stripped.split()[0]))
    return out


def test_the_tree_is_drawn_once_and_completely() -> None:
    defined = {c for _, c in inspect.getmembers(E, inspect.isclass)
               if issubclass(c, BaseException) and c.__module__ == E.__name__}
    assert defined == set(TREE) | {E.IsthmusError}
    for cls, parent in TREE.items():
        assert cls.__bases__ == (parent,), cls
    drawing = _drawing()
    assert drawing[0] == (4, "IsthmusError")
    assert sorted(name for _, name in drawing) == sorted(c.__name__ for c in defined)
    for i, (col, name) in enumerate(drawing[1:], start=1):
        parent = next(n for c, n in reversed(drawing[:i]) if c < col)
        assert parent == TREE[getattr(E, name)].__name__, f"{name} is drawn under {parent}"


def test_client_errors_are_exported_with_client_error() -> None:
    for name in ("ClientError", "TransportError", "BridgeUnreachable", "BridgeTimeout"):
        assert name in isthmus.__all__ and getattr(isthmus, name) is getattr(E, name)


def test_scheduler_errors_carry_their_status_and_detail() -> None:
    exc = E.SchedulerError("squeue failed (exit 1): boom", command=["squeue"], stderr="boom", returncode=1)
    assert exc.status_code == 502
    assert exc.detail == {"message": "squeue failed (exit 1): boom", "command": ["squeue"], "stderr": "boom"}
    assert E.SchedulerUnavailable("x").status_code == 503
    assert E.SchedulerTimeout("x").status_code == 504


def test_run_command_translates_each_failure() -> None:
    with pytest.raises(E.SchedulerUnavailable, match="not found on PATH") as missing:
        asyncio.run(run_command(["isthmus-no-such-scheduler-cli", "-a"]))
    assert missing.value.command == ["isthmus-no-such-scheduler-cli", "-a"]
    with pytest.raises(E.SchedulerError, match=r"failed \(exit 4\)") as failed:
        asyncio.run(run_command(["sh", "-c", "echo 'no such partition' >&2; exit 4"]))
    assert type(failed.value) is E.SchedulerError and failed.value.status_code == 502
    assert failed.value.stderr == "no such partition" and failed.value.returncode == 4
    with pytest.raises(E.SchedulerTimeout) as slow:
        asyncio.run(run_command(["sleep", "5"], timeout=0.1))
    assert slow.value.status_code == 504 and isinstance(slow.value.__cause__, TimeoutError)


# -- error_response: the one mapping ----------------------------------------------------------------

class Item(BaseModel):
    count: int


def _validation_error() -> BaseException:
    try:
        Item.model_validate({"count": "secret-value-123"})
    except Exception as exc:  # noqa: BLE001 - the exception is what we want
        return exc
    raise AssertionError("no validation error")


def _request_validation_error() -> RequestValidationError:
    return RequestValidationError([{"type": "int_parsing", "loc": ("body", "count"), "msg": "not an int",
                                    "input": "secret-value-123", "ctx": {"secret": "secret-value-123"}}])


TABLE: list[tuple[Callable[[], BaseException], int, Any]] = [
    (lambda: E.PluginError("teapot", 418), 418, "teapot"),
    (lambda: E.PluginError({"message": "m", "errors": [1]}, 422), 422, {"message": "m", "errors": [1]}),
    (lambda: E.PluginError("bad"), 400, "bad"),
    (lambda: E.SessionNotFound("no session s"), 404, "no session s"),
    (lambda: E.SessionClosed("closed"), 410, "closed"),
    (lambda: E.SchedulerError("f", command=["c"], stderr="e"), 502, {"message": "f", "command": ["c"], "stderr": "e"}),
    (lambda: E.SchedulerUnavailable("u", command=["c"]), 503, {"message": "u", "command": ["c"], "stderr": ""}),
    (lambda: E.SchedulerTimeout("t", command=["c"]), 504, {"message": "t", "command": ["c"], "stderr": ""}),
    (lambda: HTTPException(409, "busy"), 409, "busy"),
    (lambda: RecursionError("deep"), 400, "the request body is nested too deeply"),
    (lambda: b"\xff".decode(), 400, "the request is not valid UTF-8"),
    (lambda: OverflowError("big"), 422, "bad input: big"),
    (lambda: ValueError("v"), 400, "ValueError: v"),
    (lambda: KeyError("k"), 400, "KeyError: 'k'"),
    (lambda: TypeError("t"), 400, "TypeError: t"),
    (lambda: RuntimeError("disk on fire"), 500, "p failed: RuntimeError: disk on fire"),
    (lambda: E.ConfigError("expected a number", key="limit"), 500, "p failed: ConfigError: key limit: expected a "
                                                                    "number"),
]


def _make(factory: Callable[[], BaseException]) -> BaseException:
    try:
        return factory()
    except BaseException as exc:  # noqa: BLE001 - b"\xff".decode() raises the exception we want
        return exc


@pytest.mark.parametrize(("factory", "status", "detail"), TABLE)
def test_error_response_table(factory: Callable[[], BaseException], status: int, detail: Any) -> None:
    import orjson

    resp = error_response(_make(factory), "p")
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert orjson.loads(bytes(resp.body)) == {"detail": detail}


@pytest.mark.parametrize("exc", [_validation_error(), _request_validation_error()])
def test_validation_errors_are_422_and_never_echo_what_was_sent(exc: BaseException) -> None:
    resp = error_response(exc)
    assert resp.status_code == 422
    assert b"secret-value-123" not in bytes(resp.body)
    import orjson

    problems = orjson.loads(bytes(resp.body))["detail"]
    assert problems and all(set(p) == {"type", "loc", "msg"} for p in problems)
    assert problems[0]["loc"][-1] == "count"


def test_http_exception_keeps_headers_and_bodyless_statuses() -> None:
    resp = error_response(HTTPException(405, "no", headers={"Allow": "GET"}))
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"
    assert error_response(HTTPException(304)).body == b""


def test_unexpected_errors_are_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="isthmus.plugin"):
        resp = error_response(RuntimeError("disk on fire"), "p")
    assert resp.status_code == 500 and b"Traceback" not in bytes(resp.body)
    assert any(r.exc_info and r.exc_info[1].args == ("disk on fire",) for r in caplog.records)


# -- every kind of route on the host's app -------------------------------------------------------

@pytest.fixture(scope="module")
def host_client() -> Iterator[TestClient]:
    host = PluginHost(AppConfig(), ["testplugins:PluginFaults"], name="t")
    host.load()
    assert host.records["faults"].error is None
    with TestClient(host.app) as client:
        yield client


KINDS = {"plugin": 418, "session": 404, "scheduler": 502, "http": 409, "value": 400, "recursion": 400,
         "overflow": 422, "config": 500, "boom": 500}


@pytest.mark.parametrize(("kind", "status"), sorted(KINDS.items()))
def test_both_route_styles_answer_alike(host_client: TestClient, kind: str, status: int) -> None:
    added = host_client.get(f"/faults/raise/{kind}")
    routed = host_client.get(f"/faults/r/raise/{kind}")
    assert (added.status_code, routed.status_code) == (status, status)
    assert added.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert added.json() == routed.json() and set(routed.json()) == {"detail"}
    assert "Traceback" not in routed.text
    if kind == "http":
        assert added.headers["retry-after"] == routed.headers["retry-after"] == "3"


def test_plugin_error_418_from_a_router_route(host_client: TestClient) -> None:
    resp = host_client.get("/faults/r/raise/plugin")
    assert resp.status_code == 418
    assert resp.json() == {"detail": {"message": "I'm a teapot", "shape": "short and stout"}}


@pytest.mark.parametrize(("kind", "status"), [("failed", 502), ("missing", 503), ("timeout", 504)])
def test_scheduler_cli_failures_answer_their_status(host_client: TestClient, kind: str, status: int) -> None:
    for path in (f"/faults/scheduler/{kind}", f"/faults/r/scheduler/{kind}"):
        resp = host_client.get(path)
        assert resp.status_code == status, path
        detail = resp.json()["detail"]
        assert set(detail) == {"message", "command", "stderr"} and detail["command"]
    failed = host_client.get("/faults/r/scheduler/failed").json()["detail"]
    assert failed["stderr"] == "sbatch: error: invalid partition" and failed["command"][0] == "sh"


def test_framework_errors_are_json(host_client: TestClient) -> None:
    bad = host_client.post("/faults/r/typed?count=secret-q", json={"n": "secret-b"})
    assert bad.status_code == 422 and "secret" not in bad.text
    assert [p["loc"] for p in bad.json()["detail"]] == [["query", "count"], ["body", "n"]]
    assert host_client.post("/faults/r/typed?count=2", json={"n": 3}).json() == {"count": 2, "body": {"n": 3}}
    missing = host_client.get("/faults/no/such/route")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = host_client.get("/faults/r/typed")
    assert wrong.status_code == 405 and wrong.json() == {"detail": "Method Not Allowed"}
    assert wrong.headers["allow"] == "POST"


def test_the_hosts_own_routes_answer_json(host_client: TestClient) -> None:
    resp = host_client.get("/_edge/plugins/nope/config")
    assert resp.status_code == 404 and "nope" in resp.json()["detail"]


# -- plugins use the one scheduler mapping ---------------------------------------------------------

class Failing(BatchSystem):
    """A scheduler whose every call fails with ``exc``."""

    name = "failing"

    def __init__(self, exc: E.SchedulerError) -> None:
        self.exc = exc

    async def partitions(self) -> list[Partition]:
        raise self.exc

    async def nodes(self) -> list[Node]:
        raise self.exc

    async def jobs(self, user: str | None = None, partition: str | None = None,
                   include_finished: bool = False) -> list[Job]:
        raise self.exc

    async def cancel(self, job_id: str) -> None:
        raise self.exc


SCHEDULER_FAILURES = [(E.SchedulerError("sinfo failed (exit 1): down", command=["sinfo"], stderr="down"), 502),
                      (E.SchedulerUnavailable("sinfo not found on PATH", command=["sinfo"]), 503),
                      (E.SchedulerTimeout("sinfo did not answer within 30 s", command=["sinfo"]), 504)]


@pytest.fixture
def failing_scheduler() -> Iterator[Callable[[E.SchedulerError], None]]:
    yield lambda exc: schedulers.use(Failing(exc))
    schedulers.use(None)


@pytest.mark.parametrize(("exc", "status"), SCHEDULER_FAILURES)
def test_queue_info_answers_the_mapped_status(failing_scheduler: Callable[[E.SchedulerError], None],
                                              exc: E.SchedulerError, status: int) -> None:
    from isthmus.plugins.queue_info.plugin import PluginQueueInfo

    failing_scheduler(exc)
    app = FastAPI()
    PluginQueueInfo(app)
    client = TestClient(app)
    sid = client.post("/queue_info/register_session").json()["sid"]
    resp = client.get(f"/queue_info/get_info/{sid}")
    assert resp.status_code == status and resp.json()["detail"] == exc.detail


@pytest.mark.parametrize(("exc", "status"), SCHEDULER_FAILURES)
def test_cluster_answers_the_mapped_status(failing_scheduler: Callable[[E.SchedulerError], None],
                                           exc: E.SchedulerError, status: int) -> None:
    from isthmus.plugins.cluster.plugin import PluginCluster

    failing_scheduler(exc)
    app = FastAPI()
    PluginCluster(app)
    resp = TestClient(app).get("/cluster/summary")
    assert resp.status_code == status and resp.json()["detail"] == exc.detail


# -- the Python client: transport errors in the same tree -----------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RawServer:
    """A TCP server on 127.0.0.1 that answers each connection with ``reply`` (or nothing)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            if self.reply is not None:
                try:
                    conn.recv(65536)
                    conn.sendall(self.reply)
                finally:
                    conn.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)
        for conn in self._conns:
            conn.close()
        self.sock.close()


def test_closed_port_is_bridge_unreachable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with BridgeClient(url=url, token="t", timeout=2) as client, \
            pytest.raises(isthmus.BridgeUnreachable, match="cannot connect to") as err:
        client.list_edges()
    assert isinstance(err.value.__cause__, httpx.ConnectError)
    assert err.value.status_code is None and err.value.url == f"{url}/edge/list"
    assert isinstance(err.value, isthmus.ClientError)  # `except ClientError` catches it too


def test_a_bridge_that_never_answers_is_bridge_timeout() -> None:
    with RawServer(None) as server, BridgeClient(url=server.url, token="t", timeout=0.3) as client, \
            pytest.raises(isthmus.BridgeTimeout, match="did not answer in time") as err:
        client.whoami()
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


def test_a_broken_answer_is_a_transport_error() -> None:
    with RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{") as server, \
            BridgeClient(url=server.url, token="t", timeout=2) as client, \
            pytest.raises(isthmus.TransportError, match=r"connection to .* failed") as err:
        client.whoami()
    assert type(err.value) is isthmus.TransportError
    assert isinstance(err.value.__cause__, httpx.RemoteProtocolError)


def test_a_streamed_body_that_breaks_is_a_transport_error() -> None:
    with RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789") as server, \
            BridgeClient(url=server.url, token="t", timeout=2) as client, \
            client._http.stream("GET", "/x") as resp, pytest.raises(isthmus.TransportError) as err:
        b"".join(resp.iter_bytes())
    assert isinstance(err.value.__cause__, httpx.TransportError)


def test_a_failed_tls_handshake_is_bridge_unreachable() -> None:
    with RawServer(b"HTTP/1.1 400 Bad Request\r\n\r\nnot TLS at all") as server, \
            BridgeClient(url=f"https://127.0.0.1:{server.port}", token="t", timeout=2) as client, \
            pytest.raises(isthmus.BridgeUnreachable, match="TLS handshake with") as err:
        client.list_edges()
    assert isinstance(err.value.__cause__, httpx.ConnectError)
    assert "WRONG_VERSION_NUMBER" in str(err.value)  # the ssl module's reason, found behind httpx's error


def test_urls_in_transport_errors_carry_no_query_or_userinfo() -> None:
    url = f"http://user:pw@127.0.0.1:{_closed_port()}/x?token=secret"
    with pytest.raises(isthmus.BridgeUnreachable) as err, BridgeClient(url="http://127.0.0.1:1") as client:
        client._http.get(url)
    assert "secret" not in str(err.value) and "pw" not in str(err.value)


def test_map_exceptions_leaves_other_errors_alone() -> None:
    with pytest.raises(ValueError, match="mine"), map_exceptions("u"):
        raise ValueError("mine")
    with pytest.raises(httpx.ResponseNotRead), map_exceptions("u"):
        raise httpx.ResponseNotRead()


def test_non_2xx_answers_are_client_errors_with_a_readable_message() -> None:
    request = httpx.Request("GET", "http://b/x")
    detail = {"message": "sinfo not found on PATH", "command": ["sinfo"], "stderr": ""}
    resp = httpx.Response(503, json={"detail": detail}, request=request)
    with pytest.raises(isthmus.ClientError) as err:
        raise_for(resp, "GET x")
    assert type(err.value) is isthmus.ClientError and err.value.status_code == 503
    assert err.value.detail == detail
    assert str(err.value) == 'GET x: HTTP 503: sinfo not found on PATH: {"command": ["sinfo"]}'  # no empty fields
