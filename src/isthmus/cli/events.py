"""``isthmus events``: print the bridge's event stream (``/events``, Server-Sent Events).

Without ``--follow`` it prints what the bridge still holds for you (its replay buffer, the
last 10,000 events at most, filtered) and whatever arrives until the stream has been quiet
for ``--quiet`` seconds (1 by default; at most ``--window``, 10 s, in all), then exits 0: a
snapshot that a script can take. With ``--follow`` it keeps printing until interrupted,
reconnecting after a broken connection with ``Last-Event-ID``, so nothing the bridge still
holds is lost. ``--new`` skips the buffer, ``--since ID`` starts after an event id.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import httpx
import orjson
import typer

from ..errors import BridgeTimeout, TransportError
from ..sdk.events_client import parse_sse
from ..sdk.http import HTTPClient, raise_for
from .remote import REFUSED, BridgeOpt, Target, TokenOpt, bridge_errors, fail, resolve

RECONNECT_MAX = 10.0  # seconds between reconnects at most (--follow)


def _line(event_id: str | None, payload: dict[str, Any]) -> str:
    """One event as a line of text; data re-encoded as ASCII JSON so nothing an edge sends can drive the terminal."""
    topic = payload.get("topic")
    data = payload.get("data")
    if topic == "notification" and isinstance(data, dict):
        body = json.dumps(data.get("data"), ensure_ascii=True, separators=(",", ":"))
        return f"{event_id}  {data.get('edge')}/{data.get('plugin')}  {data.get('topic')}  {body}"
    if topic == "topology" and isinstance(data, dict):
        joined = ", ".join(sorted(data.get("joined") or {})) or "-"
        left = ", ".join(sorted(data.get("left") or {})) or "-"
        return f"{event_id}  topology  joined: {joined}  left: {left}"
    return f"{event_id}  {topic}  {json.dumps(data, ensure_ascii=True, separators=(',', ':'))}"


class _Printer:
    """Prints events and remembers the last id (to resume after a reconnect)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.last_id: str | None = None
        self.count = 0

    def event(self, event_id: str | None, raw: str) -> str | None:
        """Print one event; returns the topic (``closed`` ends the stream)."""
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict):
            return None
        if event_id:
            self.last_id = event_id
        self.count += 1
        topic = payload.get("topic")
        if self.as_json:
            typer.echo(json.dumps({"id": event_id, **payload}, ensure_ascii=True, separators=(",", ":")))
        elif topic in ("gap", "closed"):
            typer.echo(f"({topic}: {json.dumps(payload.get('data'), ensure_ascii=True)})", err=True)
        else:
            typer.echo(_line(event_id, payload))
        return str(topic)


def _stream(target: Target, params: dict[str, str], last_id: str | None, printer: _Printer, read_timeout: float,
            deadline: float | None) -> bool:
    """Read one connection's events; True when the bridge closed the stream for good (token revoked)."""
    headers = {"Authorization": f"Bearer {target.token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    timeout = httpx.Timeout(10.0, read=read_timeout)
    with HTTPClient(base_url=target.url, timeout=timeout) as http, \
            http.stream("GET", "/events", params=params, headers=headers) as resp:
        if not resp.is_success:
            resp.read()
            raise_for(resp, "events")
        for event_id, _name, data in parse_sse(resp.iter_lines()):
            if printer.event(event_id, data) == "closed":
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    return False


def events_cmd(
    edge: Annotated[list[str] | None, typer.Option("--edge", help="Only events of this edge (repeat for more).")]
    = None,
    plugin: Annotated[list[str] | None, typer.Option("--plugin", help="Only notifications of this plugin.")] = None,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="Only this topic, e.g. job_status or "
                                                                    "topology (repeat for more).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until interrupted.")]
    = False,
    since: Annotated[str | None, typer.Option(help="Start after this event id (the `id` of --json output).")]
    = None,
    new: Annotated[bool, typer.Option("--new", help="Skip the events the bridge holds; only new ones.")] = False,
    quiet: Annotated[float, typer.Option(min=0.1, help="Without --follow: stop once no event came for this many "
                                                       "seconds.")] = 1.0,
    window: Annotated[float, typer.Option(min=0.1, help="Without --follow: stop after this many seconds in all.")]
    = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: {id, topic, data}.")] = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print events (job and task states, topology, plugin notifications) from the bridge."""
    target = resolve(bridge, token)
    params = {k: ",".join(v) for k, v in (("edge", edge), ("plugin", plugin), ("topic", topic)) if v}
    last_id = None if new else (since or "0")
    printer = _Printer(as_json)
    with bridge_errors(target):
        if not follow:
            try:
                closed = _stream(target, params, last_id, printer, quiet, time.monotonic() + window)
            except BridgeTimeout:
                return  # quiet for --quiet seconds: the snapshot is complete
            if closed:
                fail("the bridge closed the event stream (the token was revoked?)", REFUSED)
            return
        pause = 0.5
        while True:
            seen = printer.count
            try:
                if _stream(target, params, printer.last_id or last_id, printer, 45.0, None):
                    fail("the bridge closed the event stream (the token was revoked?)", REFUSED)
            except TransportError as exc:  # broken or silent past the 15 s keepalive: resume where we were
                typer.echo(f"(event stream broke: {exc}; reconnecting in {pause:.1f} s)", err=True)
            pause = 0.5 if printer.count > seen else min(pause * 2, RECONNECT_MAX)
            time.sleep(pause)  # back-off between reconnects
