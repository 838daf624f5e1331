"""MCP (issue 16): a real bridge and edge, and the mcp SDK's own client over streamable HTTP and stdio."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import CallToolResult, ResourceUpdatedNotification, ToolListChangedNotification

from isthmus.testing.stack import Stack

CONFIG = {"scheduler": "none",
          "plugins": {"psij": {"enabled": True, "allowed_directories": ["~", "/tmp"]}}}
PLUGINS = ["psij", "sysinfo", "staging"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("mcp")
    files = work / "files"
    files.mkdir()
    (files / "notes.txt").write_text("line one\nline two\n")
    (files / "big.bin").write_bytes(b"x" * 5000)
    (files / "huge.txt").write_bytes(b"y" * (6 << 20))
    config = {**CONFIG, "plugins": {**CONFIG["plugins"], "staging": {"roots": [str(files)]}}}
    with Stack(plugins=PLUGINS, config=config, workdir=work) as s:
        s.files = files  # type: ignore[attr-defined]
        yield s


@pytest.fixture(scope="module")
def viewer(stack: Stack) -> str:
    return stack.create_token("viewer", name="agent-viewer")


Handler = Callable[[Any], Awaitable[None]]


@asynccontextmanager
async def over_http(stack: Stack, token: str, handler: Handler | None = None) -> AsyncIterator[ClientSession]:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
            streamable_http_client(f"{stack.url}/mcp", http_client=http) as (read, write), \
            ClientSession(read, write, message_handler=handler) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_stdio(stack: Stack, token: str, handler: Handler | None = None) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "isthmus", "mcp", "--bridge", stack.url],
                                   env={"ISTHMUS_TOKEN": token, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                                   cwd=str(stack.workdir))
    async with stdio_client(params) as (read, write), \
            ClientSession(read, write, message_handler=handler) as session:
        await session.initialize()
        yield session


TRANSPORTS = {"http": over_http, "stdio": over_stdio}


def data(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    return json.loads(text)


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.content
    return result.content[0].text  # type: ignore[union-attr,no-any-return]


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(90):
            await fn()

    anyio.run(bounded)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_tools_listed_with_schemas(stack: Stack, transport: str) -> None:
    async def body() -> None:
        async with TRANSPORTS[transport](stack, stack.admin_token) as s:
            tools = {t.name: t for t in (await s.list_tools()).tools}
            for name in ("list_edges", "cluster_summary", "submit_job", "job_status", "job_output_tail",
                         "cancel_job", "run_tasks", "list_files", "read_file", "queue_status", "workflow_status"):
                assert name in tools
            status = tools["test.psij.job_status"]
            assert status.input_schema["required"] == ["job_id"]
            assert "sid" not in status.input_schema["properties"]
            assert "GET /test/psij/job_status/{sid}/{job_id}" in (status.description or "")
            assert "body" in tools["test.psij.submit_job"].input_schema["properties"]
            assert "test.sysinfo.info" in tools
            assert not any(n.endswith(".register_session") for n in tools)  # sessions are managed
            edges = data(await s.call_tool("list_edges", {}))
            assert "test" in edges["edges"]

    run(body)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_cluster_summary_and_job_lifecycle(stack: Stack, transport: str) -> None:
    async def body() -> None:
        async with TRANSPORTS[transport](stack, stack.admin_token) as s:
            summary = data(await s.call_tool("cluster_summary", {"edge": "test"}))
            assert summary["edge"] == "test" and summary["info"]
            job = data(await s.call_tool("submit_job", {"edge": "test", "executable": "/bin/echo",
                                                        "arguments": ["hello", transport], "executor": "local"}))
            job_id = job["job_id"]
            state = None
            with anyio.fail_after(60):
                while state not in ("DONE", "FAILED", "CANCELLED"):
                    await anyio.sleep(0.3)
                    state = data(await s.call_tool("job_status", {"edge": "test", "job_id": job_id}))["state"]
            assert state == "DONE"
            tail = data(await s.call_tool("job_output_tail", {"edge": "test", "job_id": job_id}))
            assert tail["stdout"] == f"hello {transport}\n"
            # the generated tool of the same operation answers the same job (one session per caller)
            raw = data(await s.call_tool("test.psij.job_status", {"job_id": job_id}))
            assert raw["state"] == "DONE"

    run(body)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_viewer_reads_but_cannot_submit(stack: Stack, viewer: str, transport: str) -> None:
    async def body() -> None:
        async with TRANSPORTS[transport](stack, viewer) as s:
            assert data(await s.call_tool("cluster_summary", {"edge": "test"}))["edge"] == "test"
            text = error_text(await s.call_tool("submit_job", {"edge": "test", "executable": "/bin/echo"}))
            assert "not allowed" in text and "user role" in text

    run(body)


def test_bad_input_gives_error_results(stack: Stack) -> None:
    async def body() -> None:
        async with over_http(stack, stack.admin_token) as s:
            text = error_text(await s.call_tool("submit_job", {"edge": "test"}))
            assert "invalid arguments" in text and "executable: required" in text
            text = error_text(await s.call_tool("job_status", {"edge": "test", "job_id": 7}))
            assert "job_id: must be string" in text
            text = error_text(await s.call_tool("test.psij.job_status", {"job_id": "x", "bogus": 1}))
            assert "bogus: unknown argument" in text
            assert "unknown tool" in error_text(await s.call_tool("no_such_tool", {}))
            assert "unknown tool" in error_text(await s.call_tool("test.psij.no_such_op", {}))
            text = error_text(await s.call_tool("gone.psij.job_status", {"job_id": "x"}))
            assert "no edge 'gone' is connected" in text
            text = error_text(await s.call_tool("job_status", {"edge": "test", "job_id": "nope"}))
            assert "not found" in text
            assert "no workflows plugin" in error_text(await s.call_tool("workflow_status", {}))
            # the session still works after all that
            assert data(await s.call_tool("list_edges", {}))["edges"]

    run(body)


def test_unauthenticated_mcp_is_refused(stack: Stack) -> None:
    import httpx

    resp = httpx.post(f"{stack.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=5)
    assert resp.status_code == 401


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_edge_joining_mid_session_changes_the_tool_list(tmp_path: Any, transport: str) -> None:
    with Stack(plugins=["sysinfo"], edge="first", workdir=tmp_path / "s") as stack:
        async def body() -> None:
            changed = anyio.Event()

            async def handler(message: Any) -> None:
                if isinstance(message, ToolListChangedNotification):
                    changed.set()

            async with TRANSPORTS[transport](stack, stack.admin_token, handler) as s:
                names = {t.name for t in (await s.list_tools()).tools}
                assert "first.sysinfo.info" in names and "second.sysinfo.info" not in names
                await anyio.sleep(0.5)  # the stdio server's event stream is open
                stack.edge = "second"
                await anyio.to_thread.run_sync(stack.start_edge)
                with anyio.fail_after(20):
                    await changed.wait()
                names = {t.name for t in (await s.list_tools()).tools}
                assert "second.sysinfo.info" in names
                assert data(await s.call_tool("second.sysinfo.info", {}))

        run(body)


def test_files_tools_and_resources(stack: Stack) -> None:
    files = stack.files  # type: ignore[attr-defined]

    async def body() -> None:
        async with over_http(stack, stack.admin_token) as s:
            listing = data(await s.call_tool("list_files", {"edge": "test", "path": str(files)}))
            assert "notes.txt" in json.dumps(listing)
            content = data(await s.call_tool("read_file", {"edge": "test", "path": str(files / "notes.txt")}))
            assert content["text"] == "line one\nline two\n"
            text = error_text(await s.call_tool("read_file", {"edge": "test", "path": str(files / "big.bin"),
                                                              "max_bytes": 1000}))
            assert "5000 bytes" in text
            # a generated download of a large file: the answer is cut, nothing is held whole
            huge = await s.call_tool("test.staging.download", {"query": {"path": str(files / "huge.txt")}})
            assert not huge.is_error and "(cut at" in huge.content[0].text  # type: ignore[union-attr]
            assert data(await s.call_tool("list_edges", {}))["edges"]
            templates = {t.uri_template for t in (await s.list_resource_templates()).resource_templates}
            assert "isthmus://{edge}/jobs/{job_id}/stdout" in templates
            read = await s.read_resource(f"isthmus://test/files{files}/notes.txt")
            assert read.contents[0].text == "line one\nline two\n"  # type: ignore[union-attr]

    run(body)


def test_job_output_resource_and_status_subscription(stack: Stack) -> None:
    async def body() -> None:
        updated: list[str] = []

        async def handler(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                updated.append(str(message.params.uri))

        async with over_http(stack, stack.admin_token, handler) as s:
            job = data(await s.call_tool("submit_job", {"edge": "test", "executable": "/bin/sh", "executor": "local",
                                                        "arguments": ["-c", "sleep 1; echo done"]}))
            uri = f"isthmus://test/jobs/{job['job_id']}"
            with warnings.catch_warnings():  # the SDK calls it deprecated for 2026-07-28; this session is 2025-11-25
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await s.subscribe_resource(uri)
            with anyio.fail_after(30):
                while True:
                    status = json.loads((await s.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
                    if status["state"] == "DONE" and updated:
                        break
                    await anyio.sleep(0.3)
            assert set(updated) == {uri}
            out = await s.read_resource(uri + "/stdout")
            assert out.contents[0].text == "done\n"  # type: ignore[union-attr]

    run(body)


def test_deadline_passed_is_an_error_result(tmp_path: Any) -> None:
    with Stack(plugins=["tasks"], bridge_args=["--request-timeout", "1"], workdir=tmp_path / "s") as stack:
        async def body() -> None:
            async with over_http(stack, stack.admin_token) as s:
                started = data(await s.call_tool("run_tasks", {"edge": "test", "tasks": [
                    {"executable": "/bin/sleep", "arguments": ["20"]}]}))
                assert started["uids"]
                with anyio.fail_after(15):
                    text = error_text(await s.call_tool("test.tasks.wait_tasks", {"body": {"timeout": 10}}))
                assert "deadline passed" in text
                await s.call_tool("test.tasks.cancel_all_tasks", {})

        run(body)
