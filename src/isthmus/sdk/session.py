"""Per-client session state on the server side (seed 000, section 3.3.1 and 3.7)."""

from __future__ import annotations

import time
from typing import Any

from ..errors import SessionClosed
from ..types import NotifyFn, Principal


class PluginSession:
    """State one client keeps inside a plugin.

    The hosting plugin sets ``_notify`` (thread-safe, tagged with this session's owner)
    and ``owner`` right after creation; subclasses only call ``super().__init__(sid)``.
    """

    def __init__(self, sid: str, **_: Any) -> None:
        self.sid = sid
        self._active = True
        self._notify: NotifyFn | None = None
        self.owner: Principal | None = None
        self.created = time.time()
        self.last_used = time.monotonic()

    @property
    def active(self) -> bool:
        return self._active

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def _check_active(self) -> None:
        """Raise SessionClosed (410) when the session was closed or expired."""
        if not self._active:
            raise SessionClosed(f"session {self.sid} is closed; register a new session")

    async def close(self) -> dict[str, Any]:
        """Release resources; subclasses clean up first, then call this."""
        self._active = False
        return {"sid": self.sid, "status": "closed"}
