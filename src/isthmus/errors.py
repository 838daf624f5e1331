"""The one exception tree of Isthmus.

    IsthmusError
    ├── ConfigError                bad configuration: names the file, the key, what was expected
    ├── ProtocolError              a frame that cannot be decoded or does not fit the protocol
    ├── PluginError                raised inside plugins; carries an HTTP status and a detail
    │   ├── SessionNotFound        404: no such session (or not yours)
    │   └── SessionClosed          410: the session was closed or expired
    ├── SchedulerError             502: a scheduler CLI failed; names the command and its stderr
    │   ├── SchedulerUnavailable   503: the CLI is not installed here or cannot be run
    │   └── SchedulerTimeout       504: the CLI did not answer in time
    └── ClientError                the Python client got no 2xx answer (status_code, detail)
        └── TransportError         no HTTP answer at all (status_code is None)
            ├── BridgeUnreachable  cannot connect: refused, unknown host, TLS handshake failed
            └── BridgeTimeout      connecting, sending or reading took longer than the timeout

Each translation happens in one place:

* exceptions raised in plugin and host routes become JSON ``{"detail": ...}`` answers in
  ``isthmus.sdk.plugin.error_response`` (called by ``add_route_*`` routes, ``_forward`` and
  the host app's exception handlers, so ``register_routes`` routes answer the same way);
* subprocess failures of scheduler CLIs become ``SchedulerError`` in
  ``isthmus.schedulers.base.run_command``; their HTTP status is ``SchedulerError.status_code``
  and their answer ``SchedulerError.detail``;
* httpx's transport errors become ``TransportError`` in ``isthmus.sdk.client.map_exceptions``
  (always ``raise ... from`` the httpx error), and non-2xx answers ``ClientError`` in
  ``isthmus.sdk.client.raise_for``.
"""

from __future__ import annotations

from typing import Any


class IsthmusError(Exception):
    """Base of every error Isthmus raises on purpose."""


class ConfigError(IsthmusError):
    """Configuration that cannot be used; the message says where and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ", ".join(p for p in (f"file {file}" if file else "", f"key {key}" if key else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key
        self.reason = message


class ProtocolError(IsthmusError):
    """A frame that cannot be decoded or violates the wire protocol."""


class PluginError(IsthmusError):
    """An error a plugin wants the caller to see, with an HTTP status."""

    status_code = 400

    def __init__(self, detail: Any, status_code: int | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class SessionNotFound(PluginError):
    status_code = 404


class SessionClosed(PluginError):
    status_code = 410


class SchedulerError(IsthmusError):
    """A scheduler command failed; ``command`` and ``stderr`` say which and why.

    A route that lets it propagate answers ``status_code`` (502: the scheduler, upstream of
    the edge, failed) with ``detail`` as the JSON detail.
    """

    status_code: int = 502

    def __init__(self, message: str, *, command: list[str] | None = None, stderr: str = "",
                 returncode: int | None = None) -> None:
        super().__init__(message)
        self.command = command or []
        self.stderr = stderr
        self.returncode = returncode

    @property
    def detail(self) -> dict[str, Any]:
        """The JSON detail of the HTTP answer: the message, the command (argv) and its stderr."""
        return {"message": str(self), "command": list(self.command), "stderr": self.stderr}


class SchedulerUnavailable(SchedulerError):
    """The scheduler's CLI is not on PATH or cannot be executed on this edge (503)."""

    status_code = 503


class SchedulerTimeout(SchedulerError):
    """A scheduler command did not finish within its timeout (504)."""

    status_code = 504


class ClientError(IsthmusError):
    """What the Python client raises when it gets no 2xx answer.

    ``status_code`` and ``detail`` are the server's; both are None for a ``TransportError``,
    where no answer arrived at all.
    """

    def __init__(self, message: str, *, status_code: int | None, detail: object = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class TransportError(ClientError):
    """The request got no HTTP answer: the connection failed or broke (``url`` says where)."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message, status_code=None)
        self.url = url


class BridgeUnreachable(TransportError):
    """No connection to the bridge: refused, unknown host, network down, or TLS handshake failed."""


class BridgeTimeout(TransportError):
    """Connecting to the bridge, sending the request or reading its answer timed out."""
