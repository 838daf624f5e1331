"""The server-side plugin base class: one model for both plugin guides.

Seed 000 gives it sessions, ``add_route_*``, ``_forward`` and notifications; seed 003
gives it metadata, menu sections, lifecycle hooks, ``register_routes`` and a config
model. A plugin written as either guide shows (imports changed) works unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import importlib
import inspect
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import IsthmusError, PluginError, SchedulerError, SessionClosed, SessionNotFound
from ..types import Principal, Role, current_principal
from .calls import EdgeCalls
from .menu import MenuSection
from .registry import entry_points, is_import_spec
from .session import PluginSession
from .ui import UIConfigError, invalid_endpoints, validate_ui_config

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..config import AppConfig, ConfigSources


class HostView(Protocol):
    """What a plugin may ask of the host that runs it (``runtime.host.PluginHost``)."""

    @property
    def app_config(self) -> AppConfig: ...
    @property
    def environ(self) -> Mapping[str, str] | None: ...
    @property
    def topology(self) -> dict[str, Any]: ...
    def active(self) -> list[Plugin]: ...

log = logging.getLogger("isthmus.plugin")

DEFAULT_SESSION_TTL = 3600.0
READ_EFFECT = ("x-isthmus-effect", "read")  # bridge/exchange.py reads it
_CLOSED_MEMORY = 4096  # how many closed sids are remembered to answer 410, not 404

# (plugin name, topic, data, owner) -> None; must be safe to call from any thread.
NotifySink = Callable[[str, str, Any, "Principal | None"], None]


@dataclass
class PluginContext:
    """What a host hands a plugin while constructing it (config, where to notify)."""

    config: BaseModel | None = None
    sources: ConfigSources | None = None
    notify: NotifySink | None = None
    host: HostView | None = None  # for topology and app config
    extra: dict[str, Any] = field(default_factory=dict)


_context: contextvars.ContextVar[PluginContext | None] = contextvars.ContextVar(
    "isthmus_plugin_context", default=None)


def json_bytes(content: Any) -> bytes:
    """How plugin answers are encoded: orjson (datetimes, dataclasses, numpy, non-string keys)."""
    return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


class JSON(JSONResponse):
    """JSON response rendered with orjson (datetimes, dataclasses, fast)."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


# Input that breaks a parser inside a route is the caller's fault: 4xx, never a 500.
BAD_INPUT: dict[type[Exception], tuple[int, str | None]] = {
    RecursionError: (400, "the request body is nested too deeply"),
    UnicodeDecodeError: (400, "the request is not valid UTF-8"),
    OverflowError: (422, None),  # a number too large for its field (1e400, 10**5000)
}


def validation_errors(exc: RequestValidationError | ValidationError) -> list[dict[str, Any]]:
    """Validation problems as ``type, loc, msg`` only: pydantic's ``input`` and ``ctx`` repeat
    what was sent, which may be a credential or someone's data."""
    out: list[dict[str, Any]] = []
    for error in exc.errors():
        loc = [part for part in error.get("loc", ()) if isinstance(part, (str, int))]
        out.append({"type": str(error.get("type", "")), "loc": loc, "msg": str(error.get("msg", ""))})
    return out


def error_response(exc: BaseException, plugin: str = "") -> Response:
    """The one place exceptions from plugin and host routes become HTTP answers.

    Every answer is JSON ``{"detail": ...}`` and none carries a traceback:

    * ``BAD_INPUT`` types: their status (400 or 422);
    * ``PluginError``: its ``status_code`` and ``detail``;
    * ``SchedulerError``: its ``status_code`` (502, 503 unavailable, 504 timeout) and ``detail``
      ``{message, command, stderr}``;
    * ``HTTPException``: its status, detail and headers (204/304: no body);
    * ``RequestValidationError`` and pydantic's ``ValidationError``: 422, a list of
      ``{type, loc, msg}`` (never the values sent);
    * ``ValueError``, ``KeyError``, ``TypeError``: 400 with the message;
    * anything else: 500 with the exception's type and message; the traceback goes to the log.
    """
    for kind, (status, text) in BAD_INPUT.items():
        if isinstance(exc, kind):
            return JSON({"detail": text or f"bad input: {exc}"}, status_code=status)
    if isinstance(exc, (PluginError, SchedulerError)):
        return JSON({"detail": exc.detail}, status_code=exc.status_code)
    if isinstance(exc, HTTPException):
        if exc.status_code in (204, 304):  # answers that must not have a body
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    if isinstance(exc, (RequestValidationError, ValidationError)):
        return JSON({"detail": validation_errors(exc)}, status_code=422)
    if isinstance(exc, (ValueError, KeyError, TypeError)) and not isinstance(exc, UnicodeError):
        return JSON({"detail": f"{type(exc).__name__}: {exc}"}, status_code=400)
    log.error("plugin %s raised", plugin or "?", exc_info=exc)
    return JSON({"detail": f"{plugin or 'plugin'} failed: {type(exc).__name__}: {exc}"},
                status_code=500)


# What error_response maps to a status of its own. The host's app hands these to it from
# FastAPI's exception handlers, inside any middleware; everything else reaches it through
# ErrorMiddleware (Starlette gives a handler for Exception to a middleware that re-raises).
MAPPED_EXCEPTIONS: tuple[type[Exception], ...] = (
    HTTPException, RequestValidationError, ValidationError, IsthmusError, ValueError, KeyError,
    TypeError, *BAD_INPUT)


def _namespace(scope: Scope) -> str:
    """The first path segment: the plugin's namespace for plugin routes (for the log)."""
    path: str = scope.get("path", "")
    return path.lstrip("/").partition("/")[0]


async def _exception_handler(request: Request, exc: Exception) -> Response:
    return error_response(exc, _namespace(request.scope))


class ErrorMiddleware:
    """Answer any exception that escapes a route with ``error_response`` (JSON, no traceback).

    Once the response has started, nothing can be answered any more: the exception goes on
    to the server, which logs it and drops the response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            await error_response(exc, _namespace(scope))(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Make every route of ``app`` (``add_route_*``, ``register_routes``, FastAPI's own 404,
    405 and 422) answer errors through ``error_response``. The host calls it for its app; call
    it on an app you build yourself to get the same answers in tests."""
    for kind in MAPPED_EXCEPTIONS:
        app.add_exception_handler(kind, _exception_handler)
    app.add_middleware(ErrorMiddleware)


def _static_value(cls: type, attr: str) -> Any:
    """Read a class attribute that may be a property returning a literal (seed 003 style)."""
    for klass in cls.__mro__:
        if attr in klass.__dict__:
            value = klass.__dict__[attr]
            if isinstance(value, property):
                if value.fget is None:
                    return None
                try:
                    return value.fget(None)
                except Exception:  # noqa: BLE001 - a computed property: not static
                    return None
            return value
    return None


class SessionTable(dict[str, PluginSession]):
    """The plugin's sessions. Storing one binds it to the caller and to notifications,
    so even a hand-written ``register_session`` (seed 000, 3.4.2) gets ownership right."""

    def __init__(self, plugin: Plugin) -> None:
        super().__init__()
        self._plugin = plugin

    def __setitem__(self, sid: str, session: PluginSession) -> None:
        self._plugin._bind_session(session)
        super().__setitem__(sid, session)


class Plugin:
    """Base class of every Isthmus plugin. Subclasses set ``plugin_name``."""

    plugin_name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    session_class: ClassVar[type[PluginSession]] = PluginSession
    ui_config: ClassVar[dict[str, Any] | None] = None
    ui_module: ClassVar[str | None] = None  # .js file, relative to the plugin's module
    config_model: ClassVar[type[BaseModel] | None] = None
    session_ttl: ClassVar[float] = DEFAULT_SESSION_TTL
    requires: ClassVar[tuple[str, ...]] = ()  # plugins to start before this one

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        key = cls.key()
        if key and ("plugin_name" in cls.__dict__ or "plugin_id" in cls.__dict__):
            plugin_classes[key] = cls

    @classmethod
    def key(cls) -> str:
        """Namespace and registry key: ``plugin_id`` if the class defines one, else ``plugin_name``."""
        pid = _static_value(cls, "plugin_id")
        if isinstance(pid, str) and pid:
            return pid
        name = _static_value(cls, "plugin_name")
        return name if isinstance(name, str) else ""

    @classmethod
    def display_title(cls) -> str:
        title = cls.title or ""
        if not title and _static_value(cls, "plugin_id"):  # seed 003: plugin_name is the display name
            title = _static_value(cls, "plugin_name") or ""
        return title or (cls.ui_config or {}).get("title") or cls.key()

    def __init__(self, app: FastAPI | None = None, instance_name: str | None = None) -> None:
        ctx = _context.get()
        self.instance_name = instance_name or self.key()
        if not self.instance_name:
            raise TypeError(f"{type(self).__name__} has no plugin_name")
        self.namespace = f"/{self.instance_name}"
        self._sessions: SessionTable = SessionTable(self)
        self._closed: collections.OrderedDict[str, Principal | None] = collections.OrderedDict()
        self._routes: list[tuple[str, Callable[..., Any], list[str], bool]] = []
        self._notify_sink: NotifySink | None = ctx.notify if ctx else None
        self.host = ctx.host if ctx else None
        self.config_sources = ctx.sources if ctx else None
        model = type(self).config_model
        self.config: Any = ctx.config if ctx and ctx.config is not None else (model() if model else None)
        self.app: FastAPI | None = None
        self._ui = validate_ui_config(type(self).ui_config, self.instance_name)
        if app is not None:
            self.attach(app)

    # -- routes ---------------------------------------------------------------------------

    def attach(self, app: FastAPI) -> None:
        """Mount auto routes and routes added so far on ``app`` under the namespace."""
        if self.app is not None:
            return
        self.app = app
        auto: list[tuple[str, Callable[..., Any], list[str]]] = [
            ("register_session", self.register_session, ["POST"]),
            ("unregister_session/{sid}", self.unregister_session, ["POST"]),
            ("version", self._route_version, ["GET"]),
            ("list_sessions", self._route_list_sessions, ["GET"]),
            ("health", self._route_health, ["GET"]),
            ("ui_config", self._route_ui_config, ["GET"]),
        ]
        pending, self._routes = self._routes, []
        for path, handler, methods in auto:
            self._add_route(path, handler, methods)
        for path, handler, methods, reads in pending:
            self._add_route(path, handler, methods, reads)

    def mount_router(self, app: FastAPI) -> None:
        """Give ``register_routes`` an APIRouter mounted at the namespace (seed 003)."""
        if type(self).register_routes is Plugin.register_routes:
            return
        router = APIRouter()
        self.register_routes(router)
        app.include_router(router, prefix=self.namespace)

    def _add_route(self, path: str, handler: Callable[..., Any], methods: list[str], reads: bool = False) -> None:
        if self.app is None:
            self._routes.append((path, handler, methods, reads))
            return
        full = f"{self.namespace}/{path.lstrip('/')}"
        self.app.router.add_route(full, self._wrap(handler, reads), methods=methods)

    def _wrap(self, handler: Callable[..., Any], reads: bool = False) -> Callable[[Request], Any]:
        name = self.instance_name

        async def endpoint(request: Request) -> Response:
            try:
                result = handler(request)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # noqa: BLE001 - translated into an answer
                return error_response(exc, name)
            response = result if isinstance(result, Response) else JSON(result)
            if reads:  # the bridge's audit log keeps to calls that change something
                response.headers[READ_EFFECT[0]] = READ_EFFECT[1]
            return response

        endpoint.__wrapped__ = handler  # type: ignore[attr-defined]  # inspect.unwrap: its docstring for MCP
        return endpoint

    def add_route_get(self, path: str, handler: Callable[..., Any]) -> None:
        self._add_route(path, handler, ["GET"])

    def add_route_post(self, path: str, handler: Callable[..., Any], *, reads: bool = False) -> None:
        """``reads=True``: a POST that changes nothing (a batch lookup, a long poll), so the
        bridge does not audit it as a change."""
        self._add_route(path, handler, ["POST"], reads)

    def add_route_put(self, path: str, handler: Callable[..., Any]) -> None:
        self._add_route(path, handler, ["PUT"])

    def add_route_delete(self, path: str, handler: Callable[..., Any]) -> None:
        self._add_route(path, handler, ["DELETE"])

    def register_routes(self, router: APIRouter) -> None:
        """Override to add FastAPI routes; ``router`` is mounted at the plugin's namespace."""

    # -- navigation and lifecycle (seed 003) ----------------------------------------------

    def register_menu_sections(self) -> list[MenuSection]:
        """Override to add navigation entries; may return [] when the config says so."""
        return []

    async def on_startup(self) -> None:
        """Acquire resources; called in registration order once all plugins are built."""

    async def on_shutdown(self) -> None:
        """Release resources; called in reverse order, with a bounded wait."""

    async def on_config_reload(self, config: Any) -> None:
        """Called after ``self.config`` was swapped for a new, fully validated one."""

    def collect_metrics(self) -> Iterable[Metric]:
        """Override to add Prometheus metric families to the host's ``/_edge/metrics``.

        Called on each scrape, on the event loop: read counts you already keep, never scan.
        """
        return ()

    # MCP (docs/mcp.md): paths under this plugin that agents may not call as tools, and tools
    # this plugin names itself (tool name -> "METHOD path"; the handler's docstring describes it).
    mcp_exclude: frozenset[str] = frozenset()
    mcp_tools: dict[str, str] = {}  # a class-level declaration, never mutated

    # Set True to have ``self.host.topology`` kept without overriding ``on_topology_change``.
    watches_topology: bool = False

    async def on_topology_change(self, edges: dict[str, Any]) -> None:
        """Called when edges connect, disconnect or change plugins (seed 000, 3.4.4).

        ``edges`` maps each edge to its summary (``plugins``: id → title and version;
        ``host``; ``connected_at``). Only edges with a plugin that overrides this (or sets
        ``watches_topology``) are sent the topology.
        """

    # -- sessions -------------------------------------------------------------------------

    def _create_session(self, sid: str, **kwargs: Any) -> PluginSession:
        cls = self.session_class
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise PluginError(f"register_session does not take {', '.join(unknown)}", 422)
        return cls(sid, **kwargs)

    def _bind_session(self, session: PluginSession) -> None:
        if session.owner is None:
            session.owner = current_principal.get()
        if session._notify is None:
            owner = session.owner
            session._notify = lambda topic, data: self.notify(topic, data, owner=owner)

    async def register_session(self, request: Request) -> Response:
        body = await request.body()
        try:
            data = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise PluginError(f"register_session body is not JSON: {exc}", 422) from exc
        if not isinstance(data, dict):
            raise PluginError("register_session body must be a JSON object", 422)
        sid = f"session.{uuid.uuid4().hex[:12]}"
        session = self._create_session(sid, **data)
        init = getattr(session, "initialize", None)
        if init is not None:
            result = init()
            if inspect.isawaitable(result):
                await result
        self._sessions[sid] = session
        return JSON({"sid": sid})

    async def unregister_session(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        session = self._get_session(sid)
        result = await self._close_session(sid, session)
        return JSON(result)

    async def _close_session(self, sid: str, session: PluginSession) -> dict[str, Any]:
        self._sessions.pop(sid, None)
        self._closed[sid] = session.owner
        while len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)
        try:
            result = await session.close()
        finally:
            session._active = False
        return result if isinstance(result, dict) else {"sid": sid, "status": "closed"}

    @staticmethod
    def _visible(owner: Principal | None, who: Principal | None) -> bool:
        return who is None or owner is None or who.owns(owner.id)

    def _get_session(self, sid: str) -> PluginSession:
        """The caller's session ``sid``: 404 if unknown or someone else's, 410 if closed."""
        who = current_principal.get()
        session = self._sessions.get(sid)
        if session is not None and self._visible(session.owner, who):
            session._check_active()
            session.touch()
            return session
        if sid in self._closed and self._visible(self._closed[sid], who):
            raise SessionClosed(f"session {sid} is closed; register a new session")
        raise SessionNotFound(f"no session {sid} in plugin {self.instance_name}; "
                              "call register_session first")

    async def _forward(self, sid: str, method: Callable[..., Any], **kwargs: Any) -> Response:
        """Call ``method`` on session ``sid`` and answer with its result as JSON."""
        try:
            session = self._get_session(sid)
            bound = getattr(method, "__self__", None) is session
            result = method(**kwargs) if bound else method(session, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - translated into an answer
            return error_response(exc, self.instance_name)
        return result if isinstance(result, Response) else JSON(result)

    async def reap_sessions(self, now: float) -> int:
        """Close sessions idle longer than ``session_ttl``; returns how many."""
        expired = [(sid, s) for sid, s in self._sessions.items()
                   if now - s.last_used > self.session_ttl]
        for sid, session in expired:
            try:
                await self._close_session(sid, session)
            except Exception:
                log.exception("closing expired session %s of %s failed", sid, self.instance_name)
        return len(expired)

    async def close_all_sessions(self) -> None:
        for sid, session in list(self._sessions.items()):
            try:
                await asyncio.wait_for(self._close_session(sid, session), 10)
            except Exception:
                log.exception("closing session %s of %s failed", sid, self.instance_name)

    # -- notifications and callers --------------------------------------------------------

    def notify(self, topic: str, data: Any, owner: Principal | None = None) -> None:
        """Send a notification to event-stream clients; safe from any thread."""
        sink = self._notify_sink
        if sink is not None:
            sink(self.instance_name, topic, data, owner)

    _notify = notify

    @staticmethod
    def principal() -> Principal | None:
        """The caller of the request being served (None for in-process callers)."""
        return current_principal.get()

    @property
    def edge_calls(self) -> EdgeCalls:
        """Calls to plugins on other edges (``isthmus.sdk.calls``): the one way a plugin reaches
        another edge, with the served client's principal (or one it stored) and deadline."""
        calls = getattr(self.host, "edge_calls", None)
        if calls is None:
            raise RuntimeError("this host gives plugins no edge calls")
        return calls  # type: ignore[no-any-return]

    @staticmethod
    def require_role(role: Role) -> None:
        who = current_principal.get()
        if who is not None and not who.can(role):
            raise PluginError(f"this needs the {role.name} role; you are {who.role.name}", 403)

    # -- auto routes ----------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        """What the edge announces about this plugin (``/edge/list``)."""
        info: dict[str, Any] = {
            "name": self.instance_name,
            "title": self.display_title(),
            "version": self.version,
            "description": self.description or (self._ui or {}).get("description", ""),
            "ui_config": self._ui,
            "menu": [s.model_dump() for s in self.register_menu_sections()],
            "configurable": type(self).config_model is not None,
        }
        if self.ui_module:
            info["ui_module"] = True
        problems = invalid_endpoints(self.instance_name, info)
        if problems:  # _ui changed after __init__: the host reports this as the plugin's error
            raise UIConfigError("; ".join(problems))
        return info

    def ui_module_path(self) -> Path | None:
        if not self.ui_module:
            return None
        module = inspect.getmodule(type(self))
        base = Path(module.__file__).parent if module and module.__file__ else Path.cwd()
        return (base / self.ui_module).resolve()

    async def _route_version(self, request: Request) -> Response:
        return JSON({"plugin": self.instance_name, "version": self.version})

    async def _route_list_sessions(self, request: Request) -> Response:
        who = current_principal.get()
        sids = [sid for sid, s in self._sessions.items() if self._visible(s.owner, who)]
        return JSON({"sessions": sids})

    async def _route_health(self, request: Request) -> Response:
        return JSON({"status": "ok", "plugin": self.instance_name, "sessions": len(self._sessions)})

    async def _route_ui_config(self, request: Request) -> Response:
        return JSON(self._ui or {"title": self.display_title()})


def construct(cls: type[Plugin], ctx: PluginContext, app: FastAPI | None = None) -> Plugin:
    """Build a plugin with ``ctx`` visible to its base ``__init__``.

    Seed 000 plugins take ``(app)``; seed 003 plugins take nothing.
    """
    token = _context.set(ctx)
    try:
        params = inspect.signature(cls.__init__).parameters
        takes_app = "app" in params or any(p.kind is p.VAR_POSITIONAL for p in params.values())
        plugin = cls(app) if takes_app and app is not None else cls()
        if app is not None:
            plugin.attach(app)
        return plugin
    finally:
        _context.reset(token)


# Every Plugin subclass that sets plugin_name (or plugin_id) lands here when its module
# is imported: "plugins auto-register by plugin_name" (seed 000).
plugin_classes: dict[str, type[Plugin]] = {}


def load_class(spec: str) -> type[Plugin]:
    """Import one plugin class from an entry-point name or a ``pkg.module:Class`` spec."""
    if is_import_spec(spec):
        module_name, _, qualname = spec.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    else:
        eps = entry_points()
        if spec not in eps:
            known = ", ".join(sorted(eps)) or "none"
            raise LookupError(f"no plugin named {spec!r} is installed (installed: {known})")
        obj = eps[spec].load()
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise TypeError(f"{spec} is not a subclass of isthmus.Plugin")
    return obj


class PluginRegistry:
    """Plugin instances by id (seed 003's ``registry.register`` / ``get_plugin``)."""

    def __init__(self) -> None:
        self._plugins: dict[str, Plugin] = {}

    def register(self, plugin: Plugin) -> Plugin:
        self._plugins[plugin.instance_name] = plugin
        return plugin

    def get_plugin(self, plugin_id: str) -> Plugin | None:
        return self._plugins.get(plugin_id)

    def unregister(self, plugin_id: str) -> None:
        self._plugins.pop(plugin_id, None)

    def all(self) -> list[Plugin]:
        return list(self._plugins.values())

    def __contains__(self, plugin_id: object) -> bool:
        return plugin_id in self._plugins


registry = PluginRegistry()
