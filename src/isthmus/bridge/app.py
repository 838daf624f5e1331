"""The bridge as one raw ASGI app: authenticate, then dispatch by the first path segment.

    /healthz                 liveness, no auth
    /, /static/...           the Explorer (its own files; login happens in the page)
    /_edge/connect           edges' WebSocket
    /events                  Server-Sent Events
    /mcp                     the Model Context Protocol (isthmus.mcp; bearer token only)
    /edge/..., /menu, /auth/..., /bridge/terminate, /api/...   the bridge's API (FastAPI)
    /bridge/{plugin}/...     plugins hosted in the bridge process
    /{edge}/{plugin}/...     forwarded to the edge (the hot path, raw ASGI)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..config import AppConfig, BridgeConfig
from ..logs import request_id
from ..runtime.dispatch import Dispatcher
from ..runtime.host import PluginHost
from ..types import Principal, Role
from ..wire.peer import Peer, memory_pair
from .api import build_api
from .audit import AuditLog, audit_path
from .auth import TokenStore, credentials, digest, same_origin
from .bodies import CLOSE, BodyTooLarge, ClientGone, read_body, replay
from .directory import EdgeDirectory
from .edges import EdgeLink, EdgeRegistry
from .events import serve_events
from .exchange import SAFE_METHODS, Exchange, audit_entry
from .limits import Limits, retry_after
from .local_calls import LocalEdgeCalls
from .oidc import OidcRefused
from .proxy import forward, respond
from .redis_events import make_event_bus
from .relay import Relay, relayed_by
from .server import guard_of

log = logging.getLogger("isthmus.bridge")

API_SEGMENTS = frozenset({"edge", "menu", "auth", "api", "plugins"})
LOGOUT = "/auth/logout"
PUBLIC_PATHS = frozenset({"/auth/login", LOGOUT, "/auth/oidc/config"})
# Public routes where a refusal is a failed try at a credential (a token login, the browser's
# login coming back, a refresh): throttled and counted per address like a bad token, so
# nobody unauthenticated can make the bridge ask the identity provider, or write audit
# lines, without bound.
ATTEMPTS = frozenset({"/auth/login", "/auth/oidc/login", "/auth/oidc/callback", "/auth/oidc/refresh"})
_HEALTH = orjson.dumps({"status": "ok"})


METRIC_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
PUBLIC_BODY_MAX = 4096  # what an unauthenticated route may read (a login is ~100 bytes)
PUBLIC_BODY_TIMEOUT = 10.0
REVOCATION_CHECK = 0.5  # seconds between looks at the token file for revoked tokens


BridgeSettings = BridgeConfig  # the typed `bridge:` section of isthmus.yaml (isthmus.config)


class Bridge:
    def __init__(self, settings: BridgeSettings, tokens: TokenStore, app_config: AppConfig | None = None,
                 plugins: list[str] | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.app_config = app_config or AppConfig()
        self.bus = make_event_bus(settings.event_ring, settings.event_queue, ring_bytes=settings.event_ring_bytes,
                                  redis_url=settings.redis)
        self.edges = EdgeRegistry(tokens, self.bus, max_body=settings.max_body, max_event=settings.max_event)
        self.bridge_id = settings.bridge_id or f"{settings.host}-{settings.port}-{secrets.token_hex(3)}"
        self.directory: EdgeDirectory | None = None
        self.relay: Relay | None = None
        if settings.redis:
            scheme = "https" if settings.tls else "http"
            advertise = settings.advertise_url or f"{scheme}://{settings.host}:{settings.port}"
            self.directory = EdgeDirectory(settings.redis, self.bridge_id, advertise.rstrip("/"))
            self.edges.attach_directory(self.directory)
            self.relay = Relay(self.bridge_id)
        self.limits = Limits(settings.rate_limit, settings.rate_burst, settings.login_failures)
        path = audit_path(self.app_config.model_copy(update={"bridge": settings}))
        self.audit = (AuditLog(path, settings.audit_max_bytes, settings.audit_backups, batched=True)
                      if path is not None else None)
        self.metrics: Any = None
        if settings.metrics:
            from .metrics import BridgeMetrics

            self.metrics = BridgeMetrics(self)
            self.edges.topology.listeners.append(self.metrics.on_topology)
        self.oidc: Any = None
        if self.app_config.auth.oidc is not None:
            from .oidc import OidcAuth

            self.oidc = OidcAuth(self.app_config.auth.oidc, tls=settings.tls)
        self.local: PluginHost | None = None
        self.local_edge: EdgeLink | None = None
        self._local_server: Peer | None = None
        if plugins:
            self.local = PluginHost(self.app_config, plugins, notify=self._local_notify, name="bridge")
            self.local.load()
            self.local.edge_calls = LocalEdgeCalls(self)  # Plugin.edge_calls (bridge/local_calls.py)
            self.edges.topology.local = self.local.manifests
            self.edges.topology.listeners.append(self.local.apply_topology)
            self.local.view.reset(self.edges.topology.summaries())  # then fed the registry's deltas
            self.local_edge = self._local_link(self.local)
        self.api = build_api(self)
        from ..mcp.server import BridgeEndpoint  # MCP at /mcp (docs/mcp.md)

        self.mcp = BridgeEndpoint(self)
        self.explorer: Any = None
        self._exit: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._revocations: asyncio.Task[None] | None = None
        try:
            from .explorer import build_explorer

            self.explorer = build_explorer()
        except ImportError:
            self.explorer = None

    # -- lifecycle ------------------------------------------------------------------------------

    def on_exit(self, callback: Callable[[], None]) -> None:
        self._exit = callback

    def request_exit(self) -> None:
        if self._exit is not None:
            asyncio.get_running_loop().call_later(0.1, self._exit)

    async def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        for shared in self._shared():
            await shared.start()
        self._revocations = asyncio.create_task(self._enforce_revocations(), name="revocations")
        if self.oidc is not None:
            await self.oidc.start()
        if self.local_edge is not None and self._local_server is not None:
            self.local_edge.peer.start()
            self._local_server.start()
        if self.local is not None:
            await self.local.startup()
        await self.mcp.start()
        gc.freeze()  # what start-up built lives on: full collections need not walk it (~40 ms)

    def _local_link(self, host: PluginHost) -> EdgeLink:
        """The bridge's own plugins as an edge named ``bridge`` joined by an in-memory link."""
        client, server = memory_pair("bridge")
        server.handlers.update(Dispatcher(host.app, host.failed_plugin).handlers(server))
        edge = EdgeLink("bridge", client, {}, {"host": None})
        client.handlers.update(self.edges.call_handlers(edge))
        self._local_server = server
        return edge

    async def _enforce_revocations(self) -> None:
        """Close event streams and edge links whose token was revoked (within a second)."""
        while True:
            await asyncio.sleep(REVOCATION_CHECK)
            try:
                if not self.tokens.refresh():
                    continue
                for sub in self.bus.subscriber_list():
                    if sub.credential is not None and self.tokens.client_by_digest(sub.credential) is None:
                        sub.close("the token of this stream was revoked")
                await self.edges.drop_revoked()
            except Exception:
                log.exception("checking for revoked tokens failed")

    def _shared(self) -> list[Any]:
        """What may talk to Redis (several bridges): each has start/stop, healthy and problem."""
        return [self.tokens, self.bus, *([self.directory] if self.directory is not None else [])]

    def health(self, detail: bool) -> bytes:
        """``degraded`` while Redis is unreachable (this bridge still serves its own edges);
        what is wrong only for an authenticated caller (it names internal addresses)."""
        problems = [str(x.problem) for x in self._shared() if not x.healthy]
        status: dict[str, Any] = {"status": "degraded" if problems else "ok"}
        if detail:
            status.update(bridge=self.bridge_id, edges=len(self.edges.edges), problems=problems)
        return orjson.dumps(status)

    async def shutdown(self) -> None:
        if self._revocations is not None:
            self._revocations.cancel()
        await self.mcp.stop()
        if self.oidc is not None:
            await self.oidc.stop()
        for name in list(self.edges.edges):
            edge = self.edges.edges.get(name)
            if edge is not None and edge.closer is not None:
                await edge.closer(1001, "bridge shutting down")
        for shared in reversed(self._shared()):
            try:
                await shared.stop()
            except Exception:
                log.exception("stopping %s failed", type(shared).__name__)
        if self.relay is not None:
            await self.relay.aclose()
        if self.local_edge is not None and self._local_server is not None:
            await self.local_edge.peer.close()
            await self._local_server.close()
        if self.local is not None:
            await self.local.shutdown()
        if self.audit is not None:
            self.audit.close()

    def _local_notify(self, plugin: str, topic: str, data: Any, owner: Principal | None) -> None:
        body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
        publish = self.bus.notification
        args = ("bridge", plugin, topic, body, owner.id if owner else None)
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            publish(*args)
        else:
            loop.call_soon_threadsafe(publish, *args)

    # -- ASGI -------------------------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> tuple[Principal | None, str | None]:
        """(principal, the API token's digest) for a bearer token or session cookie.

        API tokens are looked up first (a dict); a JWT goes to OIDC when it is configured
        (``OidcRefused`` says why one is refused). A JWT principal has no digest: its
        lifetime is the token's own ``exp``, not the token store's revocations.
        """
        if not token:
            return None, None
        key = digest(token)
        principal = self.tokens.client_by_digest(key)
        if principal is not None:
            return principal, key
        if self.oidc is not None and self.oidc.looks_like_jwt(token):
            return await self.oidc.principal(token), None
        return None, None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if scope["path"] == "/_edge/connect":
                await self.edges.serve(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        if path == "/healthz":
            detail = False
            if self.directory is not None:
                token = credentials(scope["headers"])[0]
                detail = token is not None and self.tokens.client(token) is not None
            body = _HEALTH if self.directory is None else self.health(detail)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})
            return
        first, _, rest = path[1:].partition("/")
        if self.explorer is not None and (first in ("", "static", "favicon.ico")):
            await self.explorer(scope, receive, send)
            return
        ex = Exchange(send, scope["headers"], scope["method"])
        scope.setdefault("state", {})["request_id"] = ex.rid
        if self.audit is not None and scope["method"] not in SAFE_METHODS:
            receive = ex.counting(receive)
        context = request_id.set(ex.rid)
        try:
            await self._serve(scope, receive, ex, path, first, rest)
        finally:
            request_id.reset(context)
            self._account(scope, ex)

    def _account(self, scope: dict[str, Any], ex: Exchange) -> None:
        """One metrics observation per request; one audit line per change or refusal."""
        seconds = time.perf_counter() - ex.started
        if self.metrics is not None:
            method = scope["method"]
            self.metrics.observe(ex.edge, ex.plugin, method if method in METRIC_METHODS else "OTHER", ex.status,
                                 seconds)
        if ex.credentialed and (ex.status == 401 or ex.refused_credential is not None
                                or (scope["path"] in ATTEMPTS and 400 <= ex.status < 500 and ex.status != 429)):
            client = scope.get("client")
            self.limits.failed(client[0] if client else "?")
        if self.audit is not None and ex.audited(scope["method"], scope["path"]):
            try:
                self.audit.write(audit_entry(ex, scope, seconds))
            except OSError as exc:
                log.error("cannot write the audit log %s: %s", self.audit.path, exc)

    async def _serve(self, scope: dict[str, Any], receive: Any, ex: Exchange, path: str, first: str,
                     rest: str) -> None:
        send = ex.send
        client = scope.get("client")
        address = client[0] if client else "?"
        public = path in PUBLIC_PATHS or (self.oidc is not None and path in self.oidc.public_paths)
        token, from_cookie = credentials(scope["headers"])
        if token is not None or path in ATTEMPTS:
            ex.credentialed = True
            wait = self.limits.address_blocked(address)
            if wait:
                await respond(send, 429, "too many bad credentials from your address; try again later",
                              [(b"retry-after", retry_after(wait))])
                return
        if public:
            ex.plugin = "auth"
            if token is not None and path == LOGOUT:
                await self._note_holder(ex, token)
            await self._public(scope, receive, send)
            return
        try:
            principal, credential = await self.authenticate(token)
        except OidcRefused as exc:
            headers = [(b"www-authenticate", b'Bearer error="invalid_token"')] if exc.status == 401 else []
            await respond(send, exc.status, f"access token refused: {exc.reason}", headers)
            return
        if principal is None:
            await respond(send, 401, "authentication required: send 'Authorization: Bearer <token>' "
                                     "(create one with 'isthmus token create')",
                          [(b"www-authenticate", b"Bearer")])
            return
        ex.principal = principal
        guard = guard_of(scope)
        if guard is not None:
            guard.authenticated()
        wait = self.limits.request(principal.id)
        if wait:
            await respond(send, 429, f"rate limit: at most {self.settings.rate_limit:g} requests a second "
                                     f"(bursts of {self.settings.rate_burst}); slow down",
                          [(b"retry-after", retry_after(wait))])
            return
        method: str = scope["method"]
        if principal.role == Role.metrics and not (path == "/metrics" or rest == "_edge/metrics"):
            await respond(send, 403, "a metrics token may only scrape /metrics and /{edge}/_edge/metrics")
            return
        if method not in SAFE_METHODS:
            if from_cookie and not same_origin(scope["headers"]):
                await respond(send, 403, "cross-site request refused")
                return
            if not principal.can(Role.user) and path != "/mcp":  # MCP: each tool call checks the role
                await respond(send, 403, f"the {principal.role.name} role may only read (GET); "
                                         "this needs the user role")
                return
        scope["state"]["principal"] = principal
        if path == "/mcp":
            ex.plugin = "mcp"
            await self.mcp(scope, receive, send)
        elif path == "/metrics":
            ex.plugin = "metrics"
            await self._metrics(scope, send, principal)
        elif first == "events":
            ex.plugin = "events"
            expires = self.oidc.expires(token) if credential is None and self.oidc is not None and token else None
            await serve_events(self.bus, principal, scope, receive, send, credential=credential, expires=expires)
        elif first in API_SEGMENTS or path == "/bridge/terminate":
            ex.plugin = first
            await self.api(scope, receive, send)
        elif first == "bridge":
            await self._local_plugin(rest, scope, receive, ex, principal)
        else:
            edge = self.edges.get(first)
            if edge is None:
                remote = self.directory.holder(first) if self.directory is not None else None
                if remote is not None and self.relay is not None:
                    if relayed_by(scope) is not None:  # one hop at most: the directory was stale
                        await respond(send, 503, f"edge {first!r} moved away from bridge {self.bridge_id}; retry",
                                      [(b"retry-after", b"1")])
                        return
                    ex.plugin = "relay"
                    await self.relay.relay(remote.url, scope, receive, send, token=token or "",
                                           deadline=self.settings.request_timeout, max_body=self.settings.max_body,
                                           target=remote.bridge_id, request_id=ex.rid)
                    return
                await respond(send, 404, f"no edge named {first!r} is connected; GET /edge/list shows "
                                         "the connected edges")
                return
            ex.edge = first
            if not rest:
                await respond(send, 404, f"name a plugin: /{first}/<plugin>/...")
                return
            plugin = rest.partition("/")[0]
            ex.plugin = plugin if plugin in edge.plugins or plugin == "_edge" else "other"
            await forward(edge, "/" + rest, scope, receive, send, principal,
                          rid=next(self.edges.ids), max_body=self.settings.max_body,
                          deadline=self.settings.request_timeout, request_id=ex.rid)

    async def _note_holder(self, ex: Exchange, token: str) -> None:
        """Who a logout's credential names, for its audit line, verified like any request's
        (a JWT's claims are anyone's to write); a refused one names nobody and says why.
        The logout itself goes on: clearing a bad cookie is what the browser wants."""
        try:
            ex.principal = (await self.authenticate(token))[0]
        except OidcRefused as exc:
            ex.refused_credential = exc.reason
            return
        if ex.principal is None:
            ex.refused_credential = "not a valid token"

    async def _metrics(self, scope: dict[str, Any], send: Any, principal: Principal) -> None:
        if self.metrics is None:
            await respond(send, 404, "metrics are off on this bridge (bridge.metrics: false)")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, "GET /metrics", [(b"allow", b"GET, HEAD")])
            return
        if not (principal.role == Role.metrics or principal.can(Role.viewer)):
            await respond(send, 403, "this needs the viewer or metrics role")
            return
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), None)
        # a thread: with 10,000 edges the exposition takes ~0.4 s to render
        body, content_type = await asyncio.to_thread(self.metrics.render, accept)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode()), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})

    async def _public(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Unauthenticated routes read a few KB at most, within a few seconds, then answer."""
        try:
            body = await asyncio.wait_for(read_body(scope, receive, PUBLIC_BODY_MAX), PUBLIC_BODY_TIMEOUT)
        except BodyTooLarge:
            await respond(send, 413, f"this route takes at most {PUBLIC_BODY_MAX} bytes", CLOSE)
            return
        except TimeoutError:
            await respond(send, 408, "the request body did not arrive in time", CLOSE)
            return
        except ClientGone:
            return
        await self.api(scope, replay(body), send)

    async def _local_plugin(self, rest: str, scope: dict[str, Any], receive: Any, ex: Exchange,
                            principal: Principal) -> None:
        """Bridge-hosted plugins: the same call path as an edge's, over an in-memory link."""
        if self.local_edge is None or self.local is None:
            await respond(ex.send, 404, "this bridge hosts no plugins (start it with --plugins)")
            return
        ex.edge = "bridge"
        plugin = rest.partition("/")[0]
        ex.plugin = plugin if plugin in self.local.records or plugin == "_edge" else "other"
        await forward(self.local_edge, "/" + rest, scope, receive, ex.send, principal,
                      rid=next(self.edges.ids), max_body=self.settings.max_body,
                      deadline=self.settings.request_timeout, request_id=ex.rid)


def tokens_path(app_config: AppConfig, explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if app_config.tokens_file:
        return Path(app_config.tokens_file).expanduser()
    return app_config.config_dir / "tokens.json"
