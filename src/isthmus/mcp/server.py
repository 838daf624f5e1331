"""The MCP server: the curated tools, then one tool per plugin operation of each edge, paged.

``IsthmusMCP`` is an ``MCPServer`` whose tool list is computed per request from the topology
(``GET /edge/list`` with the caller's token, so a caller sees what REST shows them); the
operations of an edge come from its ``GET /_edge/operations`` and are cached per manifest
(the plugins' names and versions), so a thousand identical edges cost one fetch.
``BridgeEndpoint`` serves it at the bridge's ``/mcp`` (streamable HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import logging
from collections import OrderedDict
from typing import Any

import httpx
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import ToolsListChanged
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    EmptyResult,
    InputRequiredResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    ResourceTemplate,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
    UnsubscribeRequestParams,
)

from .backend import Backend, CappedApp, ToolFailure
from .tools import (
    FINAL,
    Calls,
    call_operation,
    curated_tools,
    job_output,
    job_status,
    operation_description,
    operation_names,
    operation_schema,
    problems,
    read_file,
)

log = logging.getLogger("isthmus.mcp")

try:
    __version__ = importlib.metadata.version("isthmus")
except importlib.metadata.PackageNotFoundError:  # a source tree
    __version__ = "0"

EDGES_PER_PAGE = 50  # edges whose generated tools one tools/list page carries
CACHE_MANIFESTS = 512  # distinct manifests whose operations are kept
MAX_WATCHES = 1000  # job subscriptions followed at once
MAX_WATCHES_PER_CALLER = 100  # of which one token may hold (no caller fills the bridge's share)
JOB_POLL = 1.0  # seconds between looks at a subscribed job
MAX_PEERS = 2000  # MCP sessions remembered for tools/list_changed (the transport allows 1000 at once)
RESULT_MAX = 256 << 10  # a tool result's text is cut at this many characters
INSTRUCTIONS = ("Isthmus: HPC clusters (edges) behind one bridge. Start with list_edges; cluster_summary, "
                "queue_status, submit_job/job_status/job_output_tail, run_tasks, list_files/read_file cover "
                "the common jobs; every plugin operation is also a tool named <edge>.<plugin>.<operation>. "
                "Every call runs with your own token's rights.")


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str,
                                                             option=orjson.OPT_INDENT_2).decode()
    if len(text) > RESULT_MAX:
        text = text[:RESULT_MAX] + f"\n... (cut at {RESULT_MAX} characters)"
    return text


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


class IsthmusMCP(MCPServer[Any]):
    def __init__(self, backend: Backend, token: str | None = None) -> None:
        super().__init__(name="isthmus", version=__version__, instructions=INSTRUCTIONS,
                         warn_on_duplicate_tools=False, log_level="WARNING")
        self.backend = backend
        self.token = token  # stdio: the user's token; over HTTP each request brings its own
        self.curated = curated_tools()
        self.sessions: dict[tuple[str, str, str], str] = {}
        self.operations: OrderedDict[str, list[tuple[str, dict[str, Any]]]] = OrderedDict()
        # MCP session id -> its latest request's ServerSession (whose notifications ride the session's
        # own stream): the sessions to tell that the tool list changed
        self.peers: OrderedDict[str, Any] = OrderedDict()
        self._pending: asyncio.Task[None] | None = None
        self.watches: dict[tuple[str, str], asyncio.Task[None]] = {}  # (MCP session, uri) -> poller
        self.watchers: dict[tuple[str, str], str] = {}  # (MCP session, uri) -> digest of the token following it
        self._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
        self._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams,
                                                  self._unsubscribe)

    # -- who is calling -------------------------------------------------------------------------

    def token_of(self, ctx: ServerRequestContext[Any]) -> str:
        request = ctx.request
        headers = getattr(request, "headers", None)
        if headers is not None:
            scheme, _, token = str(headers.get("authorization", "")).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if self.token:
            return self.token
        raise ToolFailure("no bearer token on this request")

    @staticmethod
    def peer_key(ctx: ServerRequestContext[Any]) -> str:
        headers = getattr(ctx.request, "headers", None)
        return str(headers.get("mcp-session-id") or "") if headers is not None else "stdio"

    def _remember(self, ctx: ServerRequestContext[Any]) -> None:
        key = self.peer_key(ctx)
        if not key:
            return
        self.peers[key] = ctx.session
        self.peers.move_to_end(key)
        while len(self.peers) > MAX_PEERS:
            self.peers.popitem(last=False)

    # -- operations, cached per manifest ---------------------------------------------------------

    @staticmethod
    def manifest_key(summary: dict[str, Any]) -> str:
        plugins = summary.get("plugins") or {}
        body = orjson.dumps({p: (v or {}).get("version") for p, v in plugins.items()}, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()

    async def edge_operations(self, calls: Calls, edge: str, summary: dict[str, Any],
                              fresh: bool = False) -> list[tuple[str, dict[str, Any]]]:
        key = self.manifest_key(summary)
        if not fresh and key in self.operations:
            self.operations.move_to_end(key)
            return self.operations[key]
        answer = await calls.backend.call(calls.token, "GET", f"/{edge}/_edge/operations")
        if answer.status >= 300:  # an older edge, or it left: no generated tools (not cached)
            return []
        ops = operation_names(answer.json().get("operations", []))
        self.operations[key] = ops
        while len(self.operations) > CACHE_MANIFESTS:
            self.operations.popitem(last=False)
        return ops

    # -- tools/list -------------------------------------------------------------------------------

    async def _handle_list_tools(self, ctx: ServerRequestContext[Any],
                                 params: PaginatedRequestParams | None) -> ListToolsResult:
        self._remember(ctx)
        cursor = params.cursor if params is not None else None
        tools: list[Tool] = []
        if not cursor:
            tools = [Tool(name=t.name, description=t.description, input_schema=t.schema,
                          annotations=ToolAnnotations(read_only_hint=t.read_only)) for t in self.curated.values()]
        try:
            calls = Calls(self.backend, self.token_of(ctx), self.sessions)
            page = await calls.get("/edge/list", "listing edges", view="summary", limit=EDGES_PER_PAGE,
                                   after=cursor[2:] if cursor and cursor.startswith("e:") else None)
        except ToolFailure as exc:
            log.info("tools/list without generated tools: %s", exc)
            return ListToolsResult(tools=tools)
        for edge, summary in page["edges"].items():
            for name, op in await self.edge_operations(calls, edge, summary):
                tools.append(Tool(name=f"{edge}.{op['plugin']}.{name}", description=operation_description(edge, op),
                                  input_schema=operation_schema(op),
                                  annotations=ToolAnnotations(read_only_hint=op["method"] == "GET")))
        nxt = page.get("next")
        return ListToolsResult(tools=tools, next_cursor=f"e:{nxt}" if nxt else None)

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self.curated.get(name)
        return tool.schema if tool is not None else None

    # -- tools/call -------------------------------------------------------------------------------

    async def _handle_call_tool(self, ctx: ServerRequestContext[Any],
                                params: CallToolRequestParams) -> CallToolResult | InputRequiredResult:
        self._remember(ctx)
        args = params.arguments or {}
        try:
            calls = Calls(self.backend, self.token_of(ctx), self.sessions)
            value = await self.call(calls, params.name, args)
        except ToolFailure as exc:
            return error_result(str(exc))
        except Exception as exc:
            log.exception("tool %s failed", params.name)
            return error_result(f"{params.name} failed: {type(exc).__name__}: {exc}")
        return CallToolResult(content=[TextContent(type="text", text=_text(value))],
                              structured_content=value if isinstance(value, dict) else None)

    async def call(self, calls: Calls, name: str, args: dict[str, Any]) -> Any:
        curated = self.curated.get(name)
        if curated is not None:
            wrong = problems(curated.schema, args)
            if wrong:
                raise ToolFailure(f"invalid arguments for {name}: " + "; ".join(wrong))
            return await curated.handler(calls, args)
        edge, plugin, operation = self.parse(name)
        page = await calls.get("/edge/list", "finding the edge", view="summary", name=edge, limit=1)
        summary = page["edges"].get(edge)
        if summary is None:
            raise ToolFailure(f"unknown tool {name!r}: no edge {edge!r} is connected (it may have left; "
                              "list the tools again)")
        op = None
        for fresh in (False, True):
            ops = dict((f"{o['plugin']}.{n}", o) for n, o in await self.edge_operations(calls, edge, summary, fresh))
            op = ops.get(f"{plugin}.{operation}")
            if op is not None:
                break
        if op is None:
            raise ToolFailure(f"unknown tool {name!r}: edge {edge!r} has no operation {plugin}.{operation}")
        wrong = problems(operation_schema(op), args)
        if wrong:
            raise ToolFailure(f"invalid arguments for {name}: " + "; ".join(wrong))
        return await call_operation(calls, edge, op, args)

    def parse(self, name: str) -> tuple[str, str, str]:
        edge, _, rest = name.rpartition(".")
        edge, _, plugin = edge.rpartition(".")
        if not edge or not plugin or not rest:
            known = ", ".join(self.curated)
            raise ToolFailure(f"unknown tool {name!r}: not one of {known}, nor <edge>.<plugin>.<operation>")
        return edge, plugin, rest

    # -- resources: job output, job status, files ---------------------------------------------------

    async def _handle_list_resources(self, ctx: ServerRequestContext[Any],
                                     params: PaginatedRequestParams | None) -> ListResourcesResult:
        return ListResourcesResult(resources=[])  # addressed through the templates below

    async def _handle_list_resource_templates(self, ctx: ServerRequestContext[Any],
                                              params: PaginatedRequestParams | None) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(resource_templates=[
            ResourceTemplate(name="job", uri_template="isthmus://{edge}/jobs/{job_id}", mime_type="application/json",
                             description="A psij job's status (subscribe: notified when its state changes)"),
            ResourceTemplate(name="job-stdout", uri_template="isthmus://{edge}/jobs/{job_id}/stdout",
                             mime_type="text/plain", description="A job's standard output (its last 256 KiB)"),
            ResourceTemplate(name="job-stderr", uri_template="isthmus://{edge}/jobs/{job_id}/stderr",
                             mime_type="text/plain", description="A job's standard error (its last 256 KiB)"),
            ResourceTemplate(name="file", uri_template="isthmus://{edge}/files/{+path}", mime_type="text/plain",
                             description="A file on an edge through staging (absolute path, at most 1 MiB)"),
        ])

    @staticmethod
    def parse_uri(uri: str) -> tuple[str, str, list[str]]:
        """(edge, kind, rest) of ``isthmus://{edge}/jobs/...`` or ``isthmus://{edge}/files/...``."""
        if not uri.startswith("isthmus://"):
            raise ToolFailure(f"unknown resource {uri!r}: the URIs are isthmus://<edge>/jobs/<job_id>[/stdout|/stderr] "
                              "and isthmus://<edge>/files/<path>")
        edge, _, rest = uri[len("isthmus://"):].partition("/")
        kind, _, tail = rest.partition("/")
        parts = tail.split("/") if kind == "jobs" else [tail]
        if not edge or kind not in ("jobs", "files") or not tail or (kind == "jobs" and len(parts) > 2):
            raise ToolFailure(f"unknown resource {uri!r}")
        return edge, kind, parts

    async def read(self, calls: Calls, uri: str) -> tuple[str, str]:
        """(text, MIME type) of a resource."""
        edge, kind, parts = self.parse_uri(uri)
        if kind == "files":
            answer = await read_file(calls, {"edge": edge, "path": "/" + parts[0].lstrip("/")})
            if answer.get("binary"):
                raise ToolFailure(f"{uri}: not a text file")
            return str(answer["text"]), "text/plain"
        if len(parts) == 1:
            return _text(await job_status(calls, {"edge": edge, "job_id": parts[0]})), "application/json"
        if parts[1] not in ("stdout", "stderr"):
            raise ToolFailure(f"unknown resource {uri!r}: a job has stdout and stderr")
        stdout, stderr, _ = await job_output(calls, edge, parts[0])
        return (stdout if parts[1] == "stdout" else stderr), "text/plain"

    async def _handle_read_resource(self, ctx: ServerRequestContext[Any],
                                    params: ReadResourceRequestParams) -> ReadResourceResult | InputRequiredResult:
        self._remember(ctx)
        uri = str(params.uri)
        try:
            text, mime = await self.read(Calls(self.backend, self.token_of(ctx), self.sessions), uri)
        except ToolFailure as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc), data={"uri": uri}) from exc
        return ReadResourceResult(contents=[TextResourceContents(uri=uri, text=text, mime_type=mime)])

    async def _subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        """Job status only: polled with the subscriber's token until the job is final."""
        uri = str(params.uri)
        try:
            edge, kind, parts = self.parse_uri(uri)
            if kind != "jobs" or len(parts) != 1:
                raise ToolFailure(f"{uri}: only a job's status (isthmus://<edge>/jobs/<job_id>) can be subscribed to")
            calls = Calls(self.backend, self.token_of(ctx), self.sessions)
            first = await job_status(calls, {"edge": edge, "job_id": parts[0]})
        except ToolFailure as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc), data={"uri": uri}) from exc
        key = (self.peer_key(ctx), uri)
        caller = hashlib.sha256(self.token_of(ctx).encode()).hexdigest()
        if key not in self.watches:
            if len(self.watches) >= MAX_WATCHES:
                raise MCPError(code=INVALID_PARAMS, message=f"{uri}: this bridge already follows {MAX_WATCHES} "
                               "jobs for MCP clients; poll with job_status", data={"uri": uri})
            if sum(1 for who in self.watchers.values() if who == caller) >= MAX_WATCHES_PER_CALLER:
                raise MCPError(code=INVALID_PARAMS, message=f"{uri}: you already follow {MAX_WATCHES_PER_CALLER} "
                               "jobs; unsubscribe some, or poll with job_status", data={"uri": uri})
        self.watchers[key] = caller
        old = self.watches.pop(key, None)
        if old is not None:
            old.cancel()
        self.watches[key] = asyncio.get_running_loop().create_task(
            self._watch_job(ctx.session, calls, edge, parts[0], uri, first.get("state"), key))
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        self.watchers.pop((self.peer_key(ctx), str(params.uri)), None)
        task = self.watches.pop((self.peer_key(ctx), str(params.uri)), None)
        if task is not None:
            task.cancel()
        return EmptyResult()

    async def _watch_job(self, peer: Any, calls: Calls, edge: str, job_id: str, uri: str, state: Any,
                         key: tuple[str, str]) -> None:
        try:
            while state not in FINAL:
                await asyncio.sleep(JOB_POLL)
                try:
                    now = (await job_status(calls, {"edge": edge, "job_id": job_id})).get("state")
                except ToolFailure:
                    continue  # the edge may be reconnecting; the subscription stays
                if now != state:
                    state = now
                    await asyncio.wait_for(peer.send_resource_updated(uri), 5)
        except Exception:  # noqa: BLE001 - the subscriber went away
            pass
        finally:
            if self.watches.get(key) is asyncio.current_task():
                del self.watches[key]
                self.watchers.pop(key, None)

    # -- the tool list follows the topology --------------------------------------------------------

    def topology_changed(self, _delta: Any = None) -> None:
        """An edge joined or left: tell every MCP session, once per burst (called on the loop)."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await self._subscriptions.publish(ToolsListChanged())
        for key, peer in list(self.peers.items()):
            try:
                await asyncio.wait_for(peer.send_tool_list_changed(), 5)
            except Exception:  # noqa: BLE001 - that client has gone
                self.peers.pop(key, None)


class BridgeEndpoint:
    """``/mcp`` on the bridge: streamable HTTP, tools calling the bridge in process."""

    def __init__(self, bridge: Any) -> None:
        transport = httpx.ASGITransport(app=CappedApp(bridge))
        self.server = IsthmusMCP(Backend("http://bridge.internal", transport,
                                         deadline=float(bridge.settings.request_timeout)))
        # The bridge already authenticated the caller (bearer token) before this app runs; the
        # Host/Origin checks the SDK offers for unauthenticated local servers do not apply.
        self.app = self.server.streamable_http_app(
            streamable_http_path="/mcp", max_sessions=1000,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        bridge.edges.topology.listeners.append(self.server.topology_changed)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()

        async def run() -> None:
            async with self.server.session_manager.run():
                ready.set()
                await self._stop.wait()

        self._task = asyncio.create_task(run(), name="mcp")
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        await self.server.backend.aclose()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scheme, _, _ = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            body = orjson.dumps({"detail": "/mcp takes a bearer token (Authorization: Bearer <token>), "
                                           "not the Explorer's cookie"})
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
