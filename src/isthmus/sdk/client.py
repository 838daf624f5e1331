"""The Python client: BridgeClient → EdgeClient → PluginClient (seed 000, 3.3.4)."""

from __future__ import annotations

import importlib
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast, overload

import httpx

from ..errors import ClientError
from .events_client import EventStream
from .http import HTTPClient, raise_for
from .registry import entry_points
from .topology import TopologyView

DEFAULT_URL = "http://127.0.0.1:8000"
NotificationCallback = Callable[[str, str, str, Any], None]
log = logging.getLogger("isthmus.client")
TopologyCallback = Callable[[dict[str, Any]], None]
C = TypeVar("C", bound="PluginClient")


# PluginClient subclasses by the plugin they speak to.
client_classes: dict[str, type[PluginClient]] = {}


def client_class_for(plugin_name: str) -> type[PluginClient] | None:
    """The client class for a plugin, importing the installed plugin's client module if needed."""
    if plugin_name in client_classes:
        return client_classes[plugin_name]
    ep = entry_points().get(plugin_name)
    if ep is not None:
        package = ep.value.partition(":")[0].rpartition(".")[0]
        for candidate in (f"{package}.client", ep.value.partition(":")[0]):
            try:
                importlib.import_module(candidate)
            except ImportError:
                continue
            if plugin_name in client_classes:
                break
    return client_classes.get(plugin_name)


class PluginClient:
    """Client side of one plugin on one edge. Subclasses set ``plugin_name``."""

    plugin_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("plugin_name"):
            client_classes[cls.plugin_name] = cls

    def __init__(self, http: httpx.Client, edge: str, plugin: str,
                 bridge: BridgeClient | None = None) -> None:
        self._http = http
        self.edge = edge
        self.plugin = plugin
        self._bridge = bridge
        self.sid: str | None = None

    def _url(self, path: str) -> str:
        return f"/{self.edge}/{self.plugin}/{path.lstrip('/')}"

    @staticmethod
    def _raise(resp: httpx.Response, context: str = "") -> None:
        raise_for(resp, context)

    def _require_sid(self) -> str:
        if not self.sid:
            raise RuntimeError("No active session: call register_session() first")
        return self.sid

    def _get(self, route: str, /, **params: Any) -> Any:
        """GET a route of this plugin; keyword arguments become query parameters (None ones are dropped)."""
        resp = self._http.get(self._url(route), params={k: v for k, v in params.items() if v is not None})
        self._raise(resp, f"GET {route}")
        return resp.json()

    def _post(self, route: str, /, json: Any = None, **kwargs: Any) -> Any:
        resp = self._http.post(self._url(route), json=json, **kwargs)
        self._raise(resp, f"POST {route}")
        return resp.json()

    def _put(self, route: str, /, json: Any = None) -> Any:
        resp = self._http.put(self._url(route), json=json)
        self._raise(resp, f"PUT {route}")
        return resp.json()

    def _delete(self, route: str, /) -> Any:
        resp = self._http.delete(self._url(route))
        self._raise(resp, f"DELETE {route}")
        return resp.json()

    def register_session(self, **kwargs: Any) -> str:
        self.sid = self._post("register_session", json=kwargs)["sid"]
        return self.sid

    def unregister_session(self) -> None:
        if self.sid:
            sid, self.sid = self.sid, None
            self._post(f"unregister_session/{sid}")

    close = unregister_session

    def version(self) -> str:
        return cast(str, self._get("version")["version"])

    def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._get("health"))

    def list_sessions(self) -> list[str]:
        return cast(list[str], self._get("list_sessions")["sessions"])

    def get_ui_config(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._get("ui_config"))

    def register_callback(self, callback: NotificationCallback, topic: str | None = None) -> int:
        """Call ``callback(edge, plugin, topic, data)`` for this plugin's notifications."""
        if self._bridge is None:
            raise RuntimeError("this client was made without a BridgeClient; no event stream")
        return self._bridge.register_callback(edge_id=self.edge, plugin_name=self.plugin,
                                              topic=topic, callback=callback)

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EdgeClient:
    """One edge as seen through the bridge."""

    def __init__(self, bridge: BridgeClient, name: str) -> None:
        self._bridge = bridge
        self.name = name

    def list_plugins(self) -> dict[str, Any]:
        edges = self._bridge.list_edges()
        if self.name not in edges:
            raise ClientError(f"edge {self.name!r} is not connected", status_code=404)
        return cast(dict[str, Any], edges[self.name]["plugins"])

    @overload
    def get_plugin(self, name: str, client_class: type[C], register: bool = True, **session_args: Any) -> C: ...

    @overload
    def get_plugin(self, name: str, client_class: None = None, register: bool = True,
                   **session_args: Any) -> PluginClient: ...

    def get_plugin(self, name: str, client_class: type[PluginClient] | None = None,
                   register: bool = True, **session_args: Any) -> PluginClient:
        """A client for plugin ``name`` with a registered session (a ``client_class`` instance when given)."""
        cls = client_class or client_class_for(name) or PluginClient
        client = cls(self._bridge._http, self.name, name, bridge=self._bridge)
        if register:
            client.register_session(**session_args)
        return client


class BridgeClient:
    """Talks to one bridge. Events arrive on a background thread that reconnects itself."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 60.0, verify: bool | str | ssl.SSLContext = True) -> None:
        self.url = (url or os.environ.get("ISTHMUS_URL") or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get("ISTHMUS_TOKEN") or os.environ.get("ISTHMUS_ADMIN_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if isinstance(verify, str):  # a CA bundle path
            verify = ssl.create_default_context(cafile=verify)
        self._http = HTTPClient(base_url=self.url, headers=headers, timeout=timeout, verify=verify)
        self._verify = verify
        self._lock = threading.Lock()
        self._callbacks: dict[int, tuple[str | None, str | None, str | None, NotificationCallback]] = {}
        self._topology_callbacks: dict[int, TopologyCallback] = {}
        self._topology = TopologyView()
        self._next_id = 0
        self._events: EventStream | None = None

    # -- REST -------------------------------------------------------------------------------

    def list_edges(self, *, plugin: str | None = None, name: str | None = None,
                   view: str = "full") -> dict[str, Any]:
        """Every connected edge (following ``/edge/list``'s pages), optionally filtered by a
        plugin it runs or a name glob; ``view="summary"`` leaves out menus and UI."""
        edges: dict[str, Any] = {}
        params: dict[str, Any] = {"limit": 1000, "view": view}
        if plugin:
            params["plugin"] = plugin
        if name:
            params["name"] = name
        while True:
            resp = self._http.get("/edge/list", params=params)
            raise_for(resp, "list_edges")
            page = resp.json()
            edges.update(page["edges"])
            if not page.get("next"):
                return edges
            params["after"] = page["next"]

    def get_edge_client(self, name: str) -> EdgeClient:
        return EdgeClient(self, name)

    def disconnect_edge(self, name: str) -> None:
        raise_for(self._http.post(f"/edge/disconnect/{name}"), f"disconnect {name}")

    def whoami(self) -> dict[str, Any]:
        resp = self._http.get("/auth/whoami")
        raise_for(resp, "whoami")
        return cast(dict[str, Any], resp.json())

    # -- events -----------------------------------------------------------------------------

    def register_callback(self, edge_id: str | None = None, plugin_name: str | None = None,
                          topic: str | None = None,
                          callback: NotificationCallback | None = None) -> int:
        """Call ``callback(edge, plugin, topic, data)`` for matching notifications."""
        if callback is None:
            raise TypeError("register_callback needs a callback")
        with self._lock:
            self._next_id += 1
            self._callbacks[self._next_id] = (edge_id, plugin_name, topic, callback)
            handle = self._next_id
        self._ensure_events()
        return handle

    def register_topology_callback(self, callback: TopologyCallback) -> int:
        """Call ``callback(edges)`` whenever edges connect, leave or change plugins.

        ``edges`` maps every edge to its summary; the client keeps it from the event
        stream's deltas (and re-reads ``/edge/list`` after a gap).
        """
        with self._lock:
            self._next_id += 1
            self._topology_callbacks[self._next_id] = callback
            handle = self._next_id
        self._ensure_events()
        return handle

    def _reload_topology(self) -> None:
        self._topology.reset(self.list_edges(view="summary"))

    def unregister_callback(self, handle: int) -> None:
        with self._lock:
            self._callbacks.pop(handle, None)
            self._topology_callbacks.pop(handle, None)

    def wait_for_events(self, timeout: float = 10.0) -> bool:
        """Block until the event stream is connected (useful before submitting work)."""
        self._ensure_events()
        assert self._events is not None
        return self._events.connected.wait(timeout)

    def _ensure_events(self) -> None:
        with self._lock:
            if self._events is None:
                self._events = EventStream(self.url, self.token, self._dispatch, verify=self._verify)
                self._events.start()

    def _dispatch(self, event: dict[str, Any]) -> None:
        topic = event.get("topic")
        data = event.get("data") or {}
        with self._lock:
            callbacks = list(self._callbacks.values())
            topo = list(self._topology_callbacks.values())
        if topic == "notification":
            edge: str = data.get("edge", "")
            plugin: str = data.get("plugin", "")
            ntopic: str = data.get("topic", "")
            for e, p, t, cb in callbacks:
                if (e is None or e == edge) and (p is None or p == plugin) and (t is None or t == ntopic):
                    cb(edge, plugin, ntopic, data.get("data"))
        elif topic in ("topology", "gap", "connected") and topo:
            if topic == "topology" and self._topology.complete:
                self._topology.apply(data)
            else:  # the first time, after missed events, or after a reconnect: read it whole
                try:
                    self._reload_topology()
                except Exception:  # the next event retries
                    log.warning("could not read /edge/list to refresh the topology", exc_info=True)
                    return
            edges = dict(self._topology.edges)
            for topology_cb in topo:
                topology_cb(edges)

    def close(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None
        self._http.close()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
