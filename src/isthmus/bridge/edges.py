"""Connected edges: enrolment, the per-edge link, request bookkeeping, topology.

An edge connects to ``/_edge/connect``, sends ``hello`` with its enrolment token and
plugin manifest, and is welcomed or refused. ``welcome`` hands the edge a per-connection
key. A second connection under a connected edge's name replaces the first only when it
shows that key (the same edge reconnecting over a half-open link) or when the first
fails a heartbeat probe (the edge died); a live edge is never displaced by someone who
merely holds the enrolment token. Every replacement is logged and shown in /edge/list.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import ProtocolError
from ..sdk.topology import plugin_summary
from ..types import Principal
from ..wire import protocol as P
from ..wire.call import Call, CallAborted
from ..wire.peer import Peer
from . import child_tokens, edge_calls
from .auth import TokenStore, digest
from .directory import EdgeDirectory, Remote
from .events import EventBus
from .server import guard_of
from .topology import ManifestCache, TopologyIndex

log = logging.getLogger("isthmus.bridge.edges")

EDGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # used with fullmatch: no trailing newline
TOPIC = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
RESERVED_TOPICS = frozenset({"topology", "gap", "closed", "notification"})
PROBE_TIMEOUT = 5.0  # how long a connected edge has to answer before a newcomer may replace it
RESERVED_NAMES = frozenset({"edge", "bridge", "events", "menu", "healthz", "auth", "static", "ui",
                            "api", "metrics", "plugins", "explorer", "favicon.ico", "_edge"})
HELLO_TIMEOUT = 10.0
ADMIT_CONCURRENCY = 16  # hellos checked at once; the rest wait their turn (not refused, not timed out)
PING_INTERVAL = 15.0
SILENCE_LIMIT = 45.0


class EdgeLink:
    """The bridge's side of one connected edge (or of the bridge's own plugins)."""

    def __init__(self, name: str, peer: Peer, manifest: dict[str, Any], info: dict[str, Any],
                 credential: str = "") -> None:
        self.name = name
        self.peer = peer
        self.plugins: dict[str, Any] = manifest
        self.info = info
        self.credential = credential  # digest of the enrolment token it connected with
        self.key = secrets.token_urlsafe(24)  # shown only to this connection, in welcome
        self.conn = secrets.token_hex(8)  # names this connection in topology deltas
        self.connected_at = time.time()
        self.requests = 0
        self.close_reason: str | None = None
        self.closer: Callable[[int, str], Any] | None = None
        self.replaced: dict[str, Any] | None = None  # how this connection displaced a previous one
        self.dropped_events = 0
        self.grant_name = name  # the name its credential must allow: a pilot's parent (child_tokens)

    def summary(self) -> dict[str, Any]:
        return {"plugins": plugin_summary(self.plugins), "host": self.info.get("host"),
                "connected_at": self.connected_at, "conn": self.conn}

    def describe(self) -> dict[str, Any]:
        return {"plugins": self.plugins, "connected_at": self.connected_at, "conn": self.conn,
                "host": self.info.get("host"), "requests": self.requests, "replaced": self.replaced}

    def send_topology(self, frame: P.Frame) -> None:
        self.peer.send(frame)

    def call(self, rid: int, deadline: float) -> Call:
        """A new call to this edge; the proxy owns it until ``finish``."""
        self.requests += 1
        return Call(self.peer, rid, deadline)

    def fail_all(self, why: str) -> None:
        exc = CallAborted(why)
        for call in list(self.peer.calls.values()):
            call.abort(exc)


class RemoteEdge:
    """An edge another bridge holds (several bridges, Redis): listed here, relayed to there.

    Its claim carries its summary and, per plugin, the content hash of the manifest; the
    manifests themselves are read from Redis once per distinct hash (``manifests``)."""

    def __init__(self, name: str, remote: Remote, manifests: dict[str, Any]) -> None:
        self.name = name
        self.remote = remote
        self.conn = remote.conn_id
        self._manifests = manifests

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.remote.summary.get("summary") or {}
        return summary

    def manifest_keys(self) -> dict[str, str]:
        keys = self.remote.summary.get("manifests")
        return keys if isinstance(keys, dict) else {}

    def describe(self) -> dict[str, Any]:
        brief = self.summary().get("plugins") or {}
        plugins = {pid: self._manifests.get(key) or {"name": pid, **(brief.get(pid) or {})}
                   for pid, key in self.manifest_keys().items()}
        return {**(self.remote.summary.get("describe") or {}), "plugins": plugins, "bridge": self.remote.bridge_id}


class EdgeRegistry:
    def __init__(self, tokens: TokenStore, bus: EventBus, *, max_body: int,
                 max_event: int = 1024 * 1024) -> None:
        self.tokens = tokens
        self.bus = bus
        self.max_body = max_body
        self.max_event = max_event
        self.edges: dict[str, EdgeLink] = {}
        self.ids = itertools.count(1)
        self.topology = TopologyIndex(bus.topology)
        self.admission = asyncio.Semaphore(ADMIT_CONCURRENCY)
        self.directory: EdgeDirectory | None = None  # several bridges: who holds which edge
        self.remote_manifests: dict[str, Any] = {}  # content hash -> manifest, of other bridges' edges
        self._background: set[asyncio.Future[Any]] = set()
        self.links: set[Peer] = set()  # every open edge link, enrolled or not (/metrics reads their traffic)
        self.retired = [0, 0, 0, 0]  # frames in, frames out, bytes in, bytes out of closed links

    # -- several bridges (Redis) -------------------------------------------------------------------

    def attach_directory(self, directory: EdgeDirectory) -> None:
        self.directory = directory
        directory.on_lost = self._on_lost
        directory.on_change = self._on_remote_change
        directory.set_prober(self._probe_local)

    def _claim(self, edge: EdgeLink) -> None:
        if self.directory is not None:
            self._spawn(self._claim_now(self.directory, edge))

    async def _claim_now(self, directory: EdgeDirectory, edge: EdgeLink) -> None:
        keys = {pid: ManifestCache.content_key(pid, m) for pid, m in edge.plugins.items()}
        await directory.put_manifests({keys[pid]: orjson.dumps(m) for pid, m in edge.plugins.items()})
        describe = {k: v for k, v in edge.describe().items() if k != "plugins"}
        await directory.claim(edge.name, edge.conn, {"summary": edge.summary(), "describe": describe,
                                                     "manifests": keys}, digest(edge.key))

    async def _fetch_manifests(self, directory: EdgeDirectory, keys: set[str]) -> None:
        for key, value in (await directory.get_manifests(sorted(keys))).items():
            try:
                self.remote_manifests[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                log.warning("a stored manifest (%s) is not JSON; ignored", key)

    def _on_lost(self, name: str, conn: str) -> None:
        """A newer connection of this edge on another bridge won: close ours."""
        edge = self.edges.get(name)
        if edge is None or edge.conn != conn:
            return
        log.warning("edge %s: a newer connection on another bridge replaced this one", name)
        del self.edges[name]
        self.topology.remove(edge, publish=False)
        edge.fail_all(f"edge {name} reconnected elsewhere")
        if edge.closer is not None:
            self._spawn(edge.closer(4000, "replaced by a newer connection on another bridge"))

    def _on_remote_change(self, joined: dict[str, Any], left: list[str]) -> None:
        for name in left:
            member = self.topology.members.get(name)
            if isinstance(member, RemoteEdge):
                self.topology.remove(member, publish=False)
        directory = self.directory
        if directory is None:
            return
        missing: set[str] = set()
        for name in joined:
            remote = directory.holder(name)
            if remote is not None and name not in self.edges:
                member = RemoteEdge(name, remote, self.remote_manifests)
                self.topology.add(member, publish=False)
                missing.update(k for k in member.manifest_keys().values() if k not in self.remote_manifests)
        if missing:
            self._spawn(self._fetch_manifests(directory, missing))

    async def _probe_local(self, name: str) -> bool:
        edge = self.edges.get(name)
        return edge is not None and await self._answers(edge)

    async def _answers(self, edge: EdgeLink) -> bool:
        """Ping ``edge``; True when it answers within PROBE_TIMEOUT."""
        asked = time.monotonic()
        edge.peer.send({"t": P.PING, "ts": time.time()})
        while time.monotonic() - asked < PROBE_TIMEOUT:
            await asyncio.sleep(0.05)
            if self.edges.get(edge.name) is not edge:
                return False
            if edge.peer.last_seen > asked:
                return True
        return False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def get(self, name: str) -> EdgeLink | None:
        return self.edges.get(name)

    def _drop(self, edge: EdgeLink) -> None:
        if self.edges.get(edge.name) is edge:
            del self.edges[edge.name]
            self.topology.remove(edge)
            log.info("edge %s disconnected", edge.name)
        self.topology.manifests.release(edge.plugins)
        self.topology.watchers.discard(edge)
        if self.directory is not None:
            self._spawn(self.directory.release(edge.name, edge.conn))

    async def drop_revoked(self) -> None:
        """Close the links of edges whose enrolment token was revoked (or no longer fits)."""
        for edge in list(self.edges.values()):
            if not self.tokens.edge_allowed_digest(edge.credential, edge.grant_name):
                log.warning("edge %s: its enrolment token was revoked; closing its link", edge.name)
                edge.peer.send({"t": P.REFUSE, "reason": "enrolment token revoked", "retry": 300})
                await edge.peer.flush(0.5)
                if edge.closer is not None:
                    await edge.closer(4003, "enrolment token revoked")

    async def disconnect(self, name: str, reason: str = "disconnected by an admin") -> bool:
        edge = self.edges.get(name)
        if edge is None:
            return False
        edge.peer.send({"t": P.SHUTDOWN, "reason": reason})
        await edge.peer.flush()
        if edge.closer is not None:
            await edge.closer(1000, reason)
        return True

    # -- the WebSocket handler (raw ASGI) --------------------------------------------------

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        closed = False

        async def send_bytes(data: bytes) -> None:
            await send({"type": "websocket.send", "bytes": data})

        async def close(code: int = 1000, reason: str = "") -> None:
            nonlocal closed
            if not closed:
                closed = True
                try:
                    await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
                except Exception:  # noqa: BLE001 - already gone
                    pass

        peer = Peer(send_bytes, name="?", max_containers=P.MAX_CONTAINERS)
        self.links.add(peer)
        peer.start()
        edge: EdgeLink | None = None
        failures: list[BaseException] = []
        peer.on_failure = failures.append
        try:
            hello = await asyncio.wait_for(self._read_hello(receive), HELLO_TIMEOUT)
            async with self.admission:  # a storm is admitted at a steady pace, none refused
                edge = await self._enrol(hello, peer)
            hello = {}  # the decoded manifests (interned now) are not kept per connection
            if edge is None:
                await peer.flush()
                await close(1008, "refused")
                return
            guard = guard_of(scope)
            if guard is not None:
                guard.authenticated()
            edge.closer = close
            peer.handlers.update(self._handlers(edge))

            async def silent() -> None:
                await close(1011, "silent")

            pinger = asyncio.create_task(peer.heartbeat(PING_INTERVAL, SILENCE_LIMIT, silent))
            try:
                await self._read_loop(edge, receive, failures)
            finally:
                pinger.cancel()
        except (TimeoutError, ProtocolError) as exc:
            log.warning("edge connection dropped: %s", exc)
            await close(1002, str(exc)[:120])
        finally:
            if edge is not None:
                edge.fail_all(f"edge {edge.name} disconnected")
            await peer.close()
            self._retire(peer)
            if edge is not None:
                self._drop(edge)
            await close()

    def _retire(self, peer: Peer) -> None:
        """Fold a closed link's traffic into ``retired``: the totals /metrics shows never go back."""
        if peer in self.links:
            self.links.discard(peer)
            totals = self.retired
            totals[0] += peer.frames_in
            totals[1] += peer.frames_out
            totals[2] += peer.bytes_in
            totals[3] += peer.bytes_out

    async def _read_hello(self, receive: Any) -> dict[str, Any]:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                raise ProtocolError("edge left before hello")
            data = message.get("bytes")
            if data is None:
                raise ProtocolError("edges speak binary msgpack frames")
            if len(data) > P.MAX_HELLO:
                raise ProtocolError(f"a hello of {len(data)} bytes is over {P.MAX_HELLO}")
            frames = P.unpack(data, P.HELLO_CONTAINERS)
            if len(frames) == 1 and frames[0]["t"] == P.HELLO:
                return frames[0]
            raise ProtocolError("the first message must be one hello frame")

    def _refuse(self, peer: Peer, reason: str, retry: float = 30.0) -> None:
        log.warning("edge refused: %s", reason)
        peer.send({"t": P.REFUSE, "reason": reason, "retry": retry})

    async def _enrol(self, hello: P.Frame, peer: Peer) -> EdgeLink | None:
        raw_name = hello.get("name")
        name = raw_name if isinstance(raw_name, str) else ""
        if hello.get("v") != P.PROTOCOL_VERSION:
            self._refuse(peer, f"protocol version {hello.get('v')} is not {P.PROTOCOL_VERSION}; "
                               "upgrade the edge or the bridge so they match")
            return None
        if not EDGE_NAME.fullmatch(name) or name in RESERVED_NAMES:
            self._refuse(peer, f"edge name {name!r} is not allowed (letters, digits, '.', '_', '-'; "
                               f"not one of {', '.join(sorted(RESERVED_NAMES))})")
            return None
        token = hello.get("token")
        credential, grant_name = (digest(token), name) if isinstance(token, str) else ("", name)
        if isinstance(token, str) and child_tokens.is_child_token(token):
            try:  # a pilot's token, minted by its parent edge: allows only its own name
                credential, grant_name = child_tokens.verify(token, name, self.tokens.edge_grants())
            except child_tokens.ChildTokenError as exc:
                self._refuse(peer, f"child enrolment token refused for edge {name!r}: {exc}")
                return None
        elif not isinstance(token, str) or not self.tokens.edge_allowed(token, name):
            self._refuse(peer, f"enrolment token not valid for edge {name!r}")
            return None
        plugins = hello.get("plugins")
        if not isinstance(plugins, dict) or not all(isinstance(k, str) for k in plugins):
            self._refuse(peer, "hello carries no plugin manifest")
            return None
        problems = manifest_problems(plugins)
        if problems:
            self._refuse(peer, "the plugin manifest is refused: " + "; ".join(problems[:5]))
            return None
        host = hello.get("host")
        info = {"host": host if isinstance(host, str) else None, "pid": hello.get("pid")}
        replaced = await self._may_replace(name, hello.get("resume"), info)
        if replaced is False:
            self._refuse(peer, f"edge {name!r} is already connected and answering; a second edge under "
                               "that name is refused (stop the other one, or disconnect it as an admin)")
            return None
        peer.name = name
        edge = EdgeLink(name, peer, self.topology.manifests.intern(plugins), info, credential=credential)
        edge.grant_name = grant_name
        old = self.edges.get(name)
        if old is not None:
            self.topology.watchers.discard(old)
        self.edges[name] = edge
        if old is not None:
            edge.replaced = {"at": time.time(), "how": replaced, "previous_host": old.info.get("host"),
                             "previous_connected_at": old.connected_at}
            log.warning("edge %s: a new connection from %s replaced the one from %s (%s)", name, info["host"],
                        old.info.get("host"), replaced)
            old.fail_all(f"edge {name} reconnected")
            if old.closer is not None:
                self._spawn(old.closer(4000, "replaced by a new connection"))
        peer.send({"t": P.WELCOME, "version": self.topology.version, "max_body": self.max_body,
                   "key": edge.key})
        self.topology.add(edge)
        self._claim(edge)
        if hello.get("watch") is True:
            self.topology.watch(edge, True)
        log.info("edge %s connected with plugins %s", name, ", ".join(plugins))
        return edge

    async def _may_replace(self, name: str, resume: Any, info: dict[str, Any]) -> str | bool | None:
        """None: no edge of that name; a reason string: replace it; False: it is alive, refuse."""
        old = self.edges.get(name)
        if old is None:
            return await self._may_take_over(name, resume, info)
        if isinstance(resume, str) and hmac.compare_digest(resume.encode(), old.key.encode()):
            return "reconnected with its connection key"
        if await self._answers(old):
            log.warning("edge %s: refused a second connection from %s while the connected one "
                        "(from %s) answers", name, info.get("host"), old.info.get("host"))
            return False
        if self.edges.get(name) is not old:
            return "the previous connection closed"
        return f"the previous connection did not answer for {PROBE_TIMEOUT:g} s"

    async def _may_take_over(self, name: str, resume: Any, info: dict[str, Any]) -> str | bool | None:
        """The same rule for an edge another bridge holds: its key, or it does not answer there."""
        remote = self.directory.holder(name) if self.directory is not None else None
        if remote is None or self.directory is None:
            return None
        if isinstance(resume, str) and self.directory.verify_resume(name, resume):
            return f"reconnected with its connection key (it was on bridge {remote.bridge_id})"
        if await self.directory.probe(name, PROBE_TIMEOUT):
            log.warning("edge %s: refused a connection from %s while bridge %s holds a live one", name,
                        info.get("host"), remote.bridge_id)
            return False
        return f"its connection on bridge {remote.bridge_id} did not answer for {PROBE_TIMEOUT:g} s"

    def call_handlers(self, edge: EdgeLink) -> dict[str, Any]:
        """The asking side's frames: answers to calls (the bridge's own plugins send only these)."""
        return {
            P.RESPONSE: lambda f: self._on_response(edge, f),
            P.CANCEL: lambda f: self._on_cancel(edge, f),
        }

    def _handlers(self, edge: EdgeLink) -> dict[str, Any]:
        """The frames an enrolled edge may send, besides chunk/credit/ping/pong (the peer's own)."""
        return {
            **self.call_handlers(edge),
            P.NOTIFY: lambda f: self._on_notify(edge, f),
            P.MANIFEST: lambda f: self._on_manifest(edge, f),
            P.WATCH: lambda f: self.topology.watch(edge, f.get("on") is True),
            **edge_calls.handlers(self, edge),  # the edge calling its children (req from the edge)
        }

    async def _read_loop(self, edge: EdgeLink, receive: Any, failures: list[BaseException]) -> None:
        peer = edge.peer
        while not failures:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                raise ProtocolError(f"edge {edge.name} sent a text message")
            peer.receive(data)
            await asyncio.sleep(0)  # a big batch must not starve the event-stream writers
        raise ProtocolError(f"edge {edge.name}: handling a frame failed: {failures[0]}")

    def _on_response(self, edge: EdgeLink, frame: P.Frame) -> None:
        call = edge.peer.calls.get(frame["id"])
        if isinstance(call, Call):
            call.on_response(frame)

    def _on_cancel(self, edge: EdgeLink, frame: P.Frame) -> None:
        call = edge.peer.calls.get(frame["id"])
        if isinstance(call, Call):
            call.on_cancel()

    def _on_notify(self, edge: EdgeLink, frame: dict[str, Any]) -> None:
        """Publish an edge's notification; the bridge alone sets edge, plugin and topic.

        ``d`` must be exactly one JSON value on one line (it is spliced into the event
        unparsed-by-clients, so anything else could add fields or forge other events).
        """
        plugin, topic, data = frame["plugin"], frame["topic"], frame.get("d")
        if not isinstance(plugin, str) or plugin not in edge.plugins:
            raise ValueError(f"notification for plugin {plugin!r}, which this edge does not announce")
        if not isinstance(topic, str) or not TOPIC.fullmatch(topic) or topic in RESERVED_TOPICS:
            raise ValueError(f"notification topic {str(topic)[:40]!r} is not allowed")
        if not isinstance(data, bytes) or b"\n" in data or b"\r" in data:
            raise ValueError("notify data must be single-line JSON bytes")
        if len(data) > self.max_event:
            edge.dropped_events += 1
            if edge.dropped_events in (1, 10, 100) or edge.dropped_events % 1000 == 0:
                log.warning("edge %s: dropped a %d-byte %s/%s notification (limit %d bytes; %d dropped)",
                            edge.name, len(data), plugin, topic, self.max_event, edge.dropped_events)
            return
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"notify data is not one JSON value: {exc}") from exc
        owner = Principal.from_wire(frame.get("ow"))
        self.bus.notification(edge.name, plugin, topic, data, owner.id if owner else None)

    def _on_manifest(self, edge: EdgeLink, frame: dict[str, Any]) -> None:
        plugins = frame.get("plugins")
        if not isinstance(plugins, dict) or not all(isinstance(k, str) for k in plugins):
            raise ValueError("manifest must carry a plugins map")
        problems = manifest_problems(plugins)
        if problems:
            raise ValueError("the plugin manifest is refused: " + "; ".join(problems[:5]))
        self.topology.manifests.release(edge.plugins)
        edge.plugins = self.topology.manifests.intern(plugins)
        self.topology.changed(edge)


def manifest_problems(plugins: dict[str, Any]) -> list[str]:
    """What is wrong with an edge's manifest (ui_config endpoints that leave their plugin)."""
    from ..sdk.ui import invalid_endpoints

    problems: list[str] = []
    for plugin, manifest in plugins.items():
        if not isinstance(manifest, dict):
            problems.append(f"{plugin}: the manifest is not a map")
            continue
        problems.extend(invalid_endpoints(plugin, manifest))
    return problems
