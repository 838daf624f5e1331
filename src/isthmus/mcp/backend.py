"""How the MCP tools reach the bridge: its own REST routes, with the caller's own token.

In the bridge the requests go in process (``httpx.ASGITransport`` over the bridge's ASGI app);
``isthmus mcp`` sends them over HTTP. Either way the bridge authenticates the token, checks the
role, applies the deadline and the edge checks ownership exactly as for any REST call.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

DEFAULT_DEADLINE = 60.0  # seconds the bridge gives one call (X-Isthmus-Deadline)
SLACK = 15.0  # the HTTP client waits this much longer than the deadline: the bridge answers 504 first
ANSWER_MAX = 4 << 20  # bytes of an answer kept (read_file takes 1 MiB, tool results 256 KiB of text)


class _Capped(Exception):
    pass


class CappedApp:
    """The bridge's ASGI app for in-process calls, stopped after ``limit`` bytes of answer.

    ``httpx.ASGITransport`` keeps a whole answer in memory; past the limit this ends the
    request (the proxy then cancels the edge's stream), so a tool reaching a download route
    never holds a large file in the bridge."""

    def __init__(self, app: Any, limit: int = ANSWER_MAX) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        sent = 0

        async def capped(message: dict[str, Any]) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if sent + len(body) > self.limit:
                    await send({"type": "http.response.body", "body": body[:self.limit - sent], "more_body": False})
                    raise _Capped
                sent += len(body)
            await send(message)

        try:
            await self.app(scope, receive, capped)
        except _Capped:
            pass


class ToolFailure(Exception):
    """A tool call that failed in a way the agent should be told (an MCP error result)."""


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    @property
    def detail(self) -> str:
        """The ``detail`` of an error answer, as text."""
        try:
            data = self.json()
        except orjson.JSONDecodeError:
            return self.body[:500].decode(errors="replace")
        detail = data.get("detail", data) if isinstance(data, dict) else data
        if isinstance(detail, dict) and "message" in detail:
            rest = {k: v for k, v in detail.items() if k != "message"}
            return f"{detail['message']}" + (f" {orjson.dumps(rest).decode()}" if rest else "")
        return detail if isinstance(detail, str) else orjson.dumps(detail).decode()


def explain(answer: Answer, what: str) -> str:
    """One sentence for an error answer: which status, and what the bridge or edge said."""
    status = answer.status
    reason = {401: "not authenticated (the token is unknown or was revoked)",
              403: "not allowed with your role", 404: "not found", 410: "gone",
              413: "too large", 422: "invalid input", 503: "unavailable (the edge left or the plugin is not running)",
              504: "deadline passed (the edge-side work was cancelled)"}.get(status, f"failed with HTTP {status}")
    return f"{what}: {reason}: {answer.detail}"


class Backend:
    """Requests to the bridge's REST API carrying a caller's bearer token."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None,
                 deadline: float = DEFAULT_DEADLINE) -> None:
        self.deadline = deadline
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), transport=transport,
                                        timeout=httpx.Timeout(deadline + SLACK, connect=10.0))

    async def call(self, token: str, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: Any = None, deadline: float | None = None) -> Answer:
        headers = {"Authorization": f"Bearer {token}",
                   "X-Isthmus-Deadline": f"{deadline or self.deadline:g}"}
        query = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in (params or {}).items()
                 if v is not None}
        content = None if json is None else orjson.dumps(json)
        if content is not None:
            headers["Content-Type"] = "application/json"
        timeout = httpx.Timeout((deadline or self.deadline) + SLACK, connect=10.0)
        try:
            async with self.client.stream(method, path, params=query, content=content, headers=headers,
                                          timeout=timeout) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) >= ANSWER_MAX:
                        del body[ANSWER_MAX:]
                        break
        except httpx.TimeoutException as exc:
            raise ToolFailure(f"{method} {path}: the bridge did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ToolFailure(f"{method} {path}: the bridge could not be reached: {exc}") from exc
        return Answer(resp.status_code, bytes(body), resp.headers.get("content-type", ""))

    async def json(self, token: str, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """The JSON answer of a call that must succeed; otherwise ``ToolFailure`` saying why."""
        answer = await self.call(token, method, path, **kwargs)
        if answer.status >= 300:
            raise ToolFailure(explain(answer, what))
        try:
            return answer.json()
        except orjson.JSONDecodeError:
            return answer.body.decode(errors="replace")

    async def aclose(self) -> None:
        await self.client.aclose()
