"""The bridge's view of every edge, and how changes to it go out: O(1) per change.

Each change (an edge joined, left, or changed its plugins) is one small delta (see
``isthmus.sdk.topology``). Deltas are batched for ``BATCH`` seconds, so a reconnect storm
of 10,000 edges becomes a few hundred deltas, and go to the event stream once, to the
edges that *watch* the topology (those whose plugins implement ``on_topology_change`` or
asked), and to the bridge's own plugins. No one is sent the whole topology on a change;
``GET /edge/list`` pages through it.

Manifests are interned: edges running the same plugins share one copy of each manifest.
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import hashlib
import itertools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ..sdk.topology import plugin_summary
from ..wire import protocol as P

log = logging.getLogger("isthmus.bridge.topology")

BATCH = 0.05  # seconds a delta waits for others to join it
PAGE_DEFAULT = 500
PAGE_MAX = 5000


class Member(Protocol):
    """What the index needs of an edge (a local EdgeLink, or a remote edge's record)."""

    name: str
    conn: str

    def summary(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


class Watcher(Protocol):
    def send_topology(self, frame: P.Frame) -> None: ...


class ManifestCache:
    """One shared copy of each distinct plugin manifest, counted by its users."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, tuple[dict[str, Any], int]] = {}

    @staticmethod
    def _key(manifest: Any) -> bytes:
        return hashlib.blake2b(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()

    @classmethod
    def content_key(cls, pid: str, manifest: Any) -> str:
        """The name other bridges know this plugin's manifest by (several bridges)."""
        return cls._key([pid, manifest]).hex()

    def intern(self, plugins: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pid, manifest in plugins.items():
            key = self._key([pid, manifest])
            shared, users = self._by_key.get(key, (manifest, 0))
            self._by_key[key] = (shared, users + 1)
            out[pid] = shared
        return out

    def release(self, plugins: dict[str, Any]) -> None:
        for pid, manifest in plugins.items():
            key = self._key([pid, manifest])
            entry = self._by_key.get(key)
            if entry is None:
                continue
            if entry[1] <= 1:
                del self._by_key[key]
            else:
                self._by_key[key] = (entry[0], entry[1] - 1)


class TopologyIndex:
    """Edges by name (sorted, for pages), the topology version, and the outgoing deltas."""

    def __init__(self, publish: Callable[[dict[str, Any]], None]) -> None:
        self.publish = publish  # to the event stream
        self.members: dict[str, Member] = {}
        self.names: list[str] = []  # sorted
        self.version = 0
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[dict[str, Any]], Any]] = []  # the bridge's own plugin host
        self.manifests = ManifestCache()
        self.local: Callable[[], dict[str, Any]] = dict  # the bridge-hosted plugins' manifests
        self._joined: dict[str, tuple[dict[str, Any], bool]] = {}  # name -> (summary, publish)
        self._left: dict[str, tuple[str, bool]] = {}  # name -> (conn, publish)
        self._flush: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Future[Any]] = set()

    # -- membership -----------------------------------------------------------------------------

    def add(self, member: Member, publish: bool = True) -> None:
        """``member`` joined (or replaced the connection of the same name)."""
        if member.name not in self.members:
            bisect.insort(self.names, member.name)
        self.members[member.name] = member
        self._left.pop(member.name, None)
        self._joined[member.name] = (member.summary(), publish)
        self._schedule()

    def remove(self, member: Member, publish: bool = True) -> None:
        """``member`` left; a newer connection under its name stays."""
        if self.members.get(member.name) is not member:
            return
        del self.members[member.name]
        i = bisect.bisect_left(self.names, member.name)
        if i < len(self.names) and self.names[i] == member.name:
            del self.names[i]
        pending = self._joined.get(member.name)
        if pending is not None and pending[0].get("conn") == member.conn:
            del self._joined[member.name]
        self._left[member.name] = (member.conn, publish)
        self._schedule()

    def changed(self, member: Member, publish: bool = True) -> None:
        """``member``'s plugins changed (a manifest frame)."""
        if self.members.get(member.name) is member:
            self._joined[member.name] = (member.summary(), publish)
            self._schedule()

    def __len__(self) -> int:
        return len(self.members)

    # -- deltas ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush = loop.call_later(BATCH, self.flush)

    def flush(self) -> None:
        """Send the pending changes as one delta (to watchers, listeners and the event stream)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._joined and not self._left:
            return
        joined, left, self._joined, self._left = self._joined, self._left, {}, {}
        self.version += 1
        everyone = {"joined": {n: s for n, (s, _) in joined.items()},
                    "left": {n: c for n, (c, _) in left.items()}}
        frame = {"t": P.TOPOLOGY, "v": self.version, "full": False, **everyone}
        for watcher in list(self.watchers):
            watcher.send_topology(frame)
        for listener in self.listeners:
            result = listener({"v": self.version, **everyone})
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        shared = {"joined": {n: s for n, (s, pub) in joined.items() if pub},
                  "left": {n: c for n, (c, pub) in left.items() if pub}}
        if shared["joined"] or shared["left"]:
            self.publish(shared)

    def watch(self, watcher: Watcher, on: bool) -> None:
        """Start (a full snapshot now, deltas after) or stop sending ``watcher`` the topology."""
        if not on:
            self.watchers.discard(watcher)
            return
        self.flush()
        watcher.send_topology({"t": P.TOPOLOGY, "v": self.version, "full": True, "left": {},
                               "joined": self.summaries()})
        self.watchers.add(watcher)

    # -- reading ------------------------------------------------------------------------------------

    def local_entry(self, full: bool) -> dict[str, Any] | None:
        plugins = self.local()
        if not plugins:
            return None
        return {"plugins": plugins if full else plugin_summary(plugins), "connected_at": None,
                "host": None, "conn": "bridge"}

    def summaries(self) -> dict[str, Any]:
        """Every edge's summary (a watcher's snapshot: O(edges), sent once per watch)."""
        out = {name: self.members[name].summary() for name in self.names}
        local = self.local_entry(full=False)
        if local is not None:
            out = {"bridge": local, **out}
        return out

    def page(self, *, limit: int = PAGE_DEFAULT, after: str | None = None, plugin: str | None = None,
             name: str | None = None, full: bool = True) -> tuple[dict[str, Any], str | None]:
        """One page of edges in name order: (edges, the name to pass as ``after`` next, or None)."""
        limit = max(1, min(limit, PAGE_MAX))
        out: dict[str, Any] = {}
        if after is None:
            local = self.local_entry(full)
            if local is not None and self._matches("bridge", local, plugin, name):
                out["bridge"] = local
        start = 0 if after is None else bisect.bisect_right(self.names, after)
        last: str | None = None
        for edge_name in itertools.islice(self.names, start, None):
            if name is not None and not fnmatch.fnmatchcase(edge_name, name):
                continue
            member = self.members[edge_name]
            entry = member.describe() if full else member.summary()
            if plugin is not None and plugin not in (entry.get("plugins") or {}):
                continue
            if len(out) >= limit:
                return out, last
            out[edge_name] = entry
            last = edge_name
        return out, None

    @staticmethod
    def _matches(edge_name: str, entry: dict[str, Any], plugin: str | None, name: str | None) -> bool:
        if name is not None and not fnmatch.fnmatchcase(edge_name, name):
            return False
        return plugin is None or plugin in (entry.get("plugins") or {})
