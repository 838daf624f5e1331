"""The one exception tree of Isthmus.

    IsthmusError
    ├── ConfigError            bad configuration: names the file, the key, what was expected
    ├── ProtocolError          a frame that cannot be decoded or does not fit the protocol
    ├── PluginError            raised inside plugins; carries an HTTP status and a detail
    │   ├── SessionNotFound    404: no such session (or not yours)
    │   └── SessionClosed      410: the session was closed or expired
    ├── SchedulerError         a scheduler CLI failed: names the command and its stderr
    │   └── SchedulerTimeout   a scheduler CLI did not answer in time
    └── ClientError            the Python client got a non-2xx answer (status_code, detail)

Plugin routes translate PluginError into JSON answers in one place
(``isthmus.sdk.plugin.error_response``); scheduler failures are translated from
subprocess errors in one place (``isthmus.schedulers.base.run_command``).
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
    """A scheduler command failed; ``command`` and ``stderr`` say which and why."""

    def __init__(self, message: str, *, command: list[str] | None = None, stderr: str = "",
                 returncode: int | None = None) -> None:
        super().__init__(message)
        self.command = command or []
        self.stderr = stderr
        self.returncode = returncode


class SchedulerTimeout(SchedulerError):
    """A scheduler command did not finish within its timeout."""


class ClientError(IsthmusError):
    """A non-2xx answer seen by the Python client."""

    def __init__(self, message: str, *, status_code: int, detail: object = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail
