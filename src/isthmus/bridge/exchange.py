"""One request as the bridge accounts for it: its id, who asked, where it went, how it ended.

``Exchange.send`` wraps the ASGI ``send`` of every API and proxied request: it stamps the
bridge's ``X-Request-ID`` on the answer and notes the status and the bytes sent. After the
request, ``app.py`` turns the exchange into one metrics observation and, for state-changing
calls and refusals, one audit line (``audit_entry``).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from ..logs import correlation_label, new_request_id
from ..types import Principal

REQUEST_ID = b"x-request-id"
# A plugin route that only reads although it is a POST (a long poll, a batch lookup) says so
# with this response header, so the audit log keeps to calls that change something.
EFFECT = b"x-isthmus-effect"
READ = b"read"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Bridge routes whose POST only reads, and POSTs that are a transport for calls audited one by one.
NOT_AUDITED = frozenset({"/edge/list", "/mcp"})
# GET routes that change state (the browser's login comes back as a GET).
AUDITED_GETS = frozenset({"/auth/oidc/callback"})
REFUSED = frozenset({401, 403})
ACTIONS = {"/auth/login": "login", "/auth/logout": "logout", "/auth/oidc/callback": "login",
           "/auth/oidc/refresh": "login.refresh",
           "/bridge/terminate": "bridge.terminate"}


class Exchange:
    """The response side of one request (see the module docstring)."""

    __slots__ = ("_send", "bytes_in", "bytes_out", "correlation", "credentialed", "edge", "effect_read", "plugin",
                 "principal", "refused_credential", "rid", "started", "status", "watch_effect")

    def __init__(self, send: Any, headers: list[tuple[bytes, bytes]], method: str = "GET") -> None:
        self._send = send
        self.watch_effect = method not in SAFE_METHODS  # only a change can turn out to be a read
        self.rid = new_request_id()
        label = None
        self.bytes_in = -1  # not known yet: no content-length (a chunked body is counted as it arrives)
        for key, value in headers:
            if key == REQUEST_ID:
                label = value
            elif key == b"content-length" and value.isdigit():
                self.bytes_in = int(value)
        self.correlation = correlation_label(label)
        self.started = time.perf_counter()
        self.status = 0
        self.bytes_out = 0
        self.effect_read = False
        self.credentialed = False  # a token (or a login) was presented: a 401 counts against the address
        self.principal: Principal | None = None
        self.refused_credential: str | None = None  # why a public route's credential named nobody (a logout's)
        self.edge = ""  # a connected edge's name (or "bridge"), else ""
        self.plugin = ""  # a plugin of that edge, or the bridge route's first segment

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.bytes_out += len(message.get("body") or b"")
        elif message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers") or ()
            if self.watch_effect:
                self.effect_read = any(k == EFFECT and v == READ for k, v in headers)
            # a new list: a response object's own list may outlive this request
            message["headers"] = [*headers, (REQUEST_ID, self.rid.encode())]
        await self._send(message)

    def counting(self, receive: Any) -> Any:
        """``receive`` that adds up the request body's bytes when no content-length said it."""
        if self.bytes_in >= 0:
            return receive
        self.bytes_in = 0

        async def wrapped() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            self.bytes_in += len(message.get("body") or b"")
            return message

        return wrapped

    def audited(self, method: str, path: str) -> bool:
        """State-changing calls and refused access; never plain reads.

        A 401 counts when a credential was refused; a request that showed none (a browser
        opening the login page) is nobody's attempt and would only be noise. A 429 is a limit
        doing its work: the metrics count it, and a flood of them would rotate the log away.
        """
        if self.status == 429:
            return False
        if self.status == 401:
            return self.credentialed
        if self.status in REFUSED:
            return True
        if method in SAFE_METHODS:
            return path in AUDITED_GETS
        return path not in NOT_AUDITED and not self.effect_read


def action_of(path: str, edge: str, plugin: str, status: int) -> str:
    """A short name for what was asked: ``login``, ``edge.disconnect``, ``psij.submit_job`` …"""
    if status in REFUSED:
        return "refused"
    known = ACTIONS.get(path)
    if known is not None:
        return known
    parts = path.split("/")
    if path.startswith("/edge/disconnect/"):
        return "edge.disconnect"
    if edge and len(parts) > 3:  # /{edge}/{plugin}/{route}/...
        route = parts[3] or "request"
        if plugin == "_edge":
            # POST /_edge/reload, PUT /_edge/plugins/{pid}/config
            return "config.change" if route == "reload" or parts[-1] == "config" else f"edge.{route}"
        return f"{plugin}.{route}"
    return "request"


def audit_entry(ex: Exchange, scope: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The audit line for ``ex`` (no tokens, no query string, no body).

    The principal a route names (a login names who just proved themselves) wins over the one
    the request's credential named: a browser may log in as someone else than its old cookie.
    """
    path: str = scope["path"]
    who = scope.get("state", {}).get("principal") or ex.principal
    client = scope.get("client")
    edge = ex.edge
    if not edge and path.startswith("/edge/disconnect/"):
        edge = path.rsplit("/", 1)[-1]
    entry: dict[str, Any] = {
        "action": action_of(path, ex.edge, ex.plugin, ex.status),
        "principal": who.id if who is not None else None,
        "name": who.name if who is not None else None,
        "role": who.role.name if who is not None else None,
        "source": client[0] if client else None,
        "edge": edge or None,
        "plugin": ex.plugin or None,
        "method": scope["method"],
        "path": path[:512],
        "status": ex.status,
        "request_id": ex.rid,
        "correlation": ex.correlation,
        "bytes_in": max(ex.bytes_in, 0),
        "bytes_out": ex.bytes_out,
        "ms": round(seconds * 1000, 2),
    }
    if who is None and ex.refused_credential is not None:
        entry["credential"] = f"refused: {ex.refused_credential}"
    return entry
