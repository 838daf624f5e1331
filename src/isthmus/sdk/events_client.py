"""A background thread that follows the bridge's ``/events`` stream and reconnects.

It resumes with ``Last-Event-ID`` so that a short disconnect loses nothing the bridge
still holds in its replay buffer.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson

from ..errors import ClientError
from .http import HTTPClient, raise_for

log = logging.getLogger("isthmus.client.events")


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str | None, str]]:
    """Yield (id, event, data) for each event in a stream of SSE lines."""
    event_id: str | None = None
    event: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "event":
            event = value


class EventStream(threading.Thread):
    def __init__(self, url: str, token: str | None, on_event: Callable[[dict[str, Any]], None],
                 *, verify: bool | str | ssl.SSLContext = True, path: str = "/events") -> None:
        super().__init__(name="isthmus-events", daemon=True)
        self._url = url + path
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._on_event = on_event
        self._verify = verify
        self._halt = threading.Event()
        self.connected = threading.Event()
        self.last_id: str | None = None
        self._client: httpx.Client | None = None

    def run(self) -> None:
        delay = 0.2
        while not self._halt.is_set():
            try:
                self._follow()
                delay = 0.2
            except Exception as exc:  # any failure means: reconnect
                if self._halt.is_set():
                    break
                # ClientError (TransportError or an HTTP error) is expected; anything else is a bug
                level = logging.DEBUG if isinstance(exc, ClientError) else logging.WARNING
                log.log(level, "event stream broke (%s); reconnecting in %.1fs", exc, delay,
                        exc_info=not isinstance(exc, ClientError))
            self.connected.clear()
            if self._halt.wait(delay):
                break
            delay = min(delay * 2, 10.0)

    def _follow(self) -> None:
        headers = dict(self._headers)
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id

        timeout = httpx.Timeout(10.0, read=45.0)  # keepalives arrive every 15 s
        with HTTPClient(timeout=timeout, verify=self._verify) as client:  # errors: isthmus.errors
            self._client = client
            with client.stream("GET", self._url, headers=headers) as resp:
                if resp.status_code in (401, 403):
                    log.error("event stream refused (HTTP %s): check the token", resp.status_code)
                    self._halt.wait(10.0)
                    return
                if not resp.is_success:
                    resp.read()
                    raise_for(resp, "event stream")
                self.connected.set()
                try:
                    self._on_event({"topic": "connected", "data": {}})  # listeners re-read what they keep
                except Exception:
                    log.exception("event callback failed")
                for event_id, _event, data in parse_sse(resp.iter_lines()):
                    if event_id:
                        self.last_id = event_id
                    try:
                        payload = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        continue
                    try:
                        self._on_event(payload)
                    except Exception:
                        log.exception("event callback failed")
                    if self._halt.is_set():
                        return

    def stop(self) -> None:
        self._halt.set()
        client = self._client
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
        self.join(timeout=2.0)
