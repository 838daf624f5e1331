"""Many simulated edges in one process: a fleet for load tests of the bridge.

    python -m isthmus.testing.swarm --bridge ws://127.0.0.1:8000 --count 1000 --prefix sim \\
        --token-file edge-token [--report FILE] [--rate 200] [--initial 0] [--offset 0]

Each simulated edge opens one WebSocket to ``/_edge/connect`` (the ``websockets`` asyncio
client, no compression, like ``isthmus edge``) and sends the real ``hello``: protocol
version, its name (``{prefix}-{index:05d}``), the enrolment token, the manifests of the
built-in plugins as an edge on a simulated scheduler announces them (computed once, with
``PluginHost``), a host name, the pid, and ``resume`` with the key of its last ``welcome``
when it reconnects. It does not ask for the topology. It answers ``ping`` with ``pong`` (same
``ts``), pings the bridge every ``--ping`` seconds and drops a bridge silent for 45 s, like a
real edge; every other frame is only counted (frames and bytes, per edge and per frame type),
so a test can see how much traffic one edge's connect causes to the others. Frames are
scanned without decoding the large fields.

After a ``shutdown`` frame (an admin disconnected it) an edge stops, as a real one does.
On connection loss an edge reconnects with exponential back-off, full jitter: a delay drawn
from [0, b), b starting at 0.5 s, doubling to 30 s, back to 0.5 s after a connection that
lasted 30 s. After a ``refuse`` it waits at least the ``retry`` the bridge gave. Edges are not
paced (all start at once, as a fleet does after a bridge restart) unless ``--rate`` caps the
connection attempts per second. The bridge caps unauthenticated connections per source
address, and a real fleet comes from many hosts, so edge ``i`` binds its socket to its own
loopback address: ``127.1.0.0 + 1 + i // --per-address`` (all of 127/8 is local on Linux).
Give a second swarm process on the same bridge a different ``--offset`` (its first index) so
names and addresses do not overlap. One process holds one socket per edge: keep ``--count``
below the open-file limit (the swarm raises its soft limit to the hard one).

Output: JSON lines on stdout, or appended to ``--report FILE``:

* ``{"event": "ready", ...}`` once the manifests are built, just before the first connect;
* ``{"event": "status", ...}`` every ``--interval`` seconds and for the ``status`` command:
  ``started``, ``connected``, ``full_at`` (wall time all started edges were last connected,
  else null), ``attempts``, ``welcomes``, ``reconnects``, ``refusals`` (+ ``refusal_reasons``),
  ``errors`` (by kind), ``disconnects``, ``shutdowns``, ``bytes_in``, ``frames_in``, ``by_type``
  (type -> [frames, bytes]) and ``latency_ms`` / ``open_ms``: p50/p99/max over the connected
  edges' last connect (hello sent -> welcome; TCP connect -> WebSocket open);
* ``{"event": "edges", "fields": [...], "rows": [...]}`` for the ``edges`` command;
* ``{"event": "final", ...}``: a last status, at exit.

Control, one command per line on stdin: ``start K`` (start K more edges, for ``--initial``
below ``--count``), ``status``, ``edges``, ``quit``. End of stdin also quits (the swarm never
outlives the process that started it; ``--no-stdin`` turns that off), as do SIGTERM, SIGINT
and ``--duration``. :class:`SwarmProcess` drives one from Python (tests, ``bench/edges.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import queue
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import msgpack
import websockets
from websockets.asyncio.client import ClientConnection

from ..errors import ProtocolError
from ..wire import protocol as P

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
HEALTHY = 30.0  # a connection that lasted this long resets the back-off
OPEN_TIMEOUT = 30.0  # as a real edge (edge/service.py): a storm's slow handshakes are waited for, not redone
SILENCE_LIMIT = 45.0
FIRST_ADDRESS = int(ipaddress.IPv4Address("127.1.0.0")) + 1
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# the fields the swarm reads; everything else in a frame is skipped undecoded
_WANTED = frozenset({"t", "ts", "key", "retry", "reason"})
EDGE_FIELDS = ["name", "connected", "welcomes", "attempts", "bytes", "frames", "latency_ms", "open_ms"]


def builtin_manifests() -> dict[str, Any]:
    """The manifests of the built-in plugins, as ``isthmus demo``'s edge announces them."""
    from .. import schedulers
    from ..cli import DEMO_OVERRIDES
    from ..config import AppConfig
    from ..runtime.host import PluginHost

    config = AppConfig()
    config.scheduler = "simulated"
    config.plugins.setdefault("simulator", {}).setdefault("enabled", True)
    schedulers.force(config.scheduler)
    host = PluginHost(config, None, name="swarm", environ={}, overrides=DEMO_OVERRIDES)
    host.load()
    return host.manifests()


def source_address(index: int, per_address: int) -> str:
    return str(ipaddress.IPv4Address(FIRST_ADDRESS + index // per_address))


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(values), 2),
            "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2), "max": round(values[-1], 2)}


class SimEdge:
    __slots__ = ("address", "attempts", "bytes", "connected", "frames", "host", "index", "key", "last_seen",
                 "latency_ms", "name", "next_ping", "open_ms", "welcomes", "ws")

    def __init__(self, index: int, prefix: str, per_address: int) -> None:
        self.index = index
        self.name = f"{prefix}-{index:05d}"
        self.address = source_address(index, per_address)
        self.host = f"swarm-{self.address}"
        self.key: str | None = None
        self.ws: ClientConnection | None = None
        self.connected = False
        self.welcomes = 0
        self.attempts = 0
        self.bytes = 0
        self.frames = 0
        self.latency_ms: float | None = None
        self.open_ms: float | None = None
        self.last_seen = 0.0
        self.next_ping = 0.0

    def row(self) -> list[Any]:
        return [self.name, int(self.connected), self.welcomes, self.attempts, self.bytes, self.frames,
                None if self.latency_ms is None else round(self.latency_ms, 2),
                None if self.open_ms is None else round(self.open_ms, 2)]


class _Refused(Exception):
    def __init__(self, retry: float) -> None:
        self.retry = retry


class _Shutdown(Exception):
    """The bridge sent ``shutdown`` (an admin disconnected the edge): a real edge stops."""


class Swarm:
    """The simulated edges of one process and their counters (run on one event loop)."""

    def __init__(self, url: str, token: str | None, count: int, *, prefix: str = "sim", offset: int = 0,
                 per_address: int = 40, rate: float | None = None, ping: float = 15.0,
                 out: Callable[[dict[str, Any]], None] | None = None,
                 manifests: dict[str, Any] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"--bridge must be ws://host:port (got {url!r})")
        self.url = url.rstrip("/") + "/_edge/connect"
        self.target = (parts.hostname, parts.port or 80)
        self.token = token
        self.edges = [SimEdge(offset + i, prefix, per_address) for i in range(count)]
        self.rate = rate
        self.ping = ping
        self.out = out or (lambda record: print(json.dumps(record), flush=True))
        self.manifests = manifests if manifests is not None else builtin_manifests()
        self.started = 0
        self.connected = 0
        self.full_at: float | None = None
        self.counts: Counter[str] = Counter()  # attempts, welcomes, reconnects, refusals, disconnects
        self.errors: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.by_type: dict[str, list[int]] = {}
        self.bytes_in = 0
        self.frames_in = 0
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._next_slot = 0.0
        self._t0 = time.time()

    # -- counters and reports ---------------------------------------------------------------

    def status(self, event: str = "status") -> dict[str, Any]:
        connected = [e for e in self.edges if e.connected]
        return {
            "event": event, "time": round(time.time(), 3), "elapsed": round(time.time() - self._t0, 3),
            "count": len(self.edges), "started": self.started, "connected": self.connected,
            "full_at": self.full_at, **{k: self.counts[k] for k in
                                        ("attempts", "welcomes", "reconnects", "refusals", "disconnects",
                                         "shutdowns")},
            "refusal_reasons": dict(self.reasons.most_common(5)), "errors": dict(self.errors.most_common(8)),
            "bytes_in": self.bytes_in, "frames_in": self.frames_in, "by_type": self.by_type,
            "latency_ms": _percentiles([e.latency_ms for e in connected if e.latency_ms is not None]),
            "open_ms": _percentiles([e.open_ms for e in connected if e.open_ms is not None]),
        }

    def edge_rows(self) -> dict[str, Any]:
        return {"event": "edges", "time": round(time.time(), 3), "fields": EDGE_FIELDS,
                "rows": [e.row() for e in self.edges]}

    def _set_connected(self, edge: SimEdge, up: bool) -> None:
        if edge.connected == up:
            return
        edge.connected = up
        self.connected += 1 if up else -1
        if up and self.connected == self.started:
            self.full_at = round(time.time(), 3)
        elif not up:
            self.full_at = None

    def scan(self, edge: SimEdge, data: bytes) -> list[dict[str, Any]]:
        """Count one message's frames and bytes; return the frames the edge acts on (their
        small fields only: large ones, such as a topology, are skipped undecoded)."""
        edge.bytes += len(data)
        self.bytes_in += len(data)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1024))
        unpacker.feed(data)
        wanted: list[dict[str, Any]] = []
        try:
            n = unpacker.read_array_header()
            for _ in range(n):
                begin = unpacker.tell()
                frame: dict[str, Any] = {}
                for _ in range(unpacker.read_map_header()):
                    key = unpacker.unpack()
                    if key in _WANTED:
                        frame[key] = unpacker.unpack()
                    else:
                        unpacker.skip()
                kind = str(frame.get("t"))
                tally = self.by_type.setdefault(kind, [0, 0])
                tally[0] += 1
                tally[1] += unpacker.tell() - begin
                edge.frames += 1
                self.frames_in += 1
                if kind in (P.WELCOME, P.REFUSE, P.PING, P.SHUTDOWN):
                    wanted.append(frame)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"undecodable message: {exc}") from exc
        return wanted

    # -- one edge ---------------------------------------------------------------------------

    async def _pace(self) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _open_socket(self, edge: SimEdge) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)  # the port is picked at connect
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((edge.address, 0))
            await asyncio.get_running_loop().sock_connect(sock, self.target)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _session(self, edge: SimEdge) -> None:
        """One connection, until it ends; raises _Refused after a refuse frame."""
        edge.attempts += 1
        self.counts["attempts"] += 1
        began = time.perf_counter()
        async with asyncio.timeout(OPEN_TIMEOUT):
            sock = await self._open_socket(edge)
        ws = await websockets.connect(self.url, sock=sock, compression=None, max_size=P.MAX_MESSAGE,
                                      ping_interval=None, open_timeout=OPEN_TIMEOUT, close_timeout=2,
                                      proxy=None, user_agent_header=None)
        edge.open_ms = (time.perf_counter() - began) * 1000
        edge.ws = ws
        refused: float | None = None
        shutdown = False
        try:
            hello: P.Frame = {"t": P.HELLO, "v": P.PROTOCOL_VERSION, "name": edge.name, "token": self.token,
                              "plugins": self.manifests, "host": edge.host, "pid": os.getpid()}
            if edge.key:
                hello["resume"] = edge.key
            sent = time.perf_counter()
            await ws.send(P.pack([hello]))
            async for message in ws:
                if isinstance(message, str):
                    continue
                edge.last_seen = time.monotonic()
                for frame in self.scan(edge, message):
                    kind = frame["t"]
                    if kind == P.PING:
                        await ws.send(P.pack([{"t": P.PONG, "ts": frame.get("ts")}]))
                    elif kind == P.WELCOME:
                        edge.latency_ms = (time.perf_counter() - sent) * 1000
                        key = frame.get("key")
                        edge.key = key if isinstance(key, str) else None
                        edge.welcomes += 1
                        self.counts["welcomes"] += 1
                        if edge.welcomes > 1:
                            self.counts["reconnects"] += 1
                        edge.next_ping = time.monotonic() + random.uniform(0, self.ping or 1)
                        self._set_connected(edge, True)
                    elif kind == P.REFUSE:
                        self.counts["refusals"] += 1
                        self.reasons[str(frame.get("reason")).replace(edge.name, "{name}")[:100]] += 1
                        retry = frame.get("retry")
                        refused = float(retry) if isinstance(retry, (int, float)) else 0.0
                    elif kind == P.SHUTDOWN:
                        self.counts["shutdowns"] += 1
                        shutdown = True
        except websockets.exceptions.ConnectionClosed:
            if refused is None and not shutdown:
                raise
        finally:
            edge.ws = None
            if edge.connected:
                self.counts["disconnects"] += 1
            self._set_connected(edge, False)
            await ws.close()
        if shutdown:
            raise _Shutdown
        if refused is not None:
            raise _Refused(refused)

    async def run_edge(self, edge: SimEdge) -> None:
        backoff = INITIAL_BACKOFF
        while not self.stopping.is_set():
            await self._pace()
            began = time.monotonic()
            retry = 0.0
            try:
                await self._session(edge)
            except _Refused as exc:
                retry = exc.retry
            except _Shutdown:
                return
            except websockets.exceptions.InvalidStatus as exc:
                self.errors[f"http {exc.response.status_code}"] += 1
            except websockets.exceptions.ConnectionClosed as exc:
                self.errors[f"closed {exc.rcvd.code if exc.rcvd else None}"] += 1
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException, ProtocolError) as exc:
                self.errors[type(exc).__name__] += 1
            if self.stopping.is_set():
                return
            if time.monotonic() - began > HEALTHY:
                backoff = INITIAL_BACKOFF
            delay = max(random.uniform(0, backoff), retry)
            backoff = min(backoff * 2, MAX_BACKOFF)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    # -- the process ------------------------------------------------------------------------

    def start(self, k: int) -> int:
        """Start the next ``k`` edges (all at once, or paced by ``rate``); returns how many."""
        todo = self.edges[self.started:self.started + max(0, k)]
        for edge in todo:
            task = asyncio.get_running_loop().create_task(self.run_edge(edge))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.started += len(todo)
        if todo:
            self.full_at = None
        return len(todo)

    async def _heartbeat(self) -> None:
        """Ping the bridge every ``ping`` s per edge; close links silent for 45 s."""
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for edge in self.edges:
                ws = edge.ws
                if ws is None or not edge.connected:
                    continue
                if now - edge.last_seen > SILENCE_LIMIT:
                    self._spawn(ws.close(code=1011, reason="bridge silent"))
                elif self.ping and now >= edge.next_ping:
                    edge.next_ping = now + self.ping
                    self._spawn(ws.send(P.pack([{"t": P.PING, "ts": time.time()}])))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._ignore_result)

    def _ignore_result(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    async def _report(self, interval: float) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)
            if not self.stopping.is_set():
                self.out(self.status())

    def command(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        if words[0] == "start" and len(words) == 2 and words[1].isdigit():
            self.start(int(words[1]))
        elif words[0] == "status":
            self.out(self.status())
        elif words[0] == "edges":
            self.out(self.edge_rows())
        elif words[0] == "quit":
            self.stopping.set()
        else:
            print(f"swarm: unknown command {line.strip()!r} (start K | status | edges | quit)", file=sys.stderr)

    async def run(self, initial: int, interval: float = 1.0, duration: float | None = None,
                  commands: bool = True) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if commands:
            threading.Thread(target=self._read_stdin, args=(loop,), daemon=True, name="swarm-stdin").start()
        hello = P.pack([{"t": P.HELLO, "plugins": self.manifests}])
        self.out({"event": "ready", "time": round(time.time(), 3), "pid": os.getpid(), "count": len(self.edges),
                  "plugins": sorted(self.manifests), "hello_bytes": len(hello)})
        self._t0 = time.time()
        self.start(initial)
        background = [loop.create_task(self._heartbeat()), loop.create_task(self._report(interval))]
        try:
            if duration is None:
                await self.stopping.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), duration)
        finally:
            self.stopping.set()
            closing = [ws.close(code=1001, reason="edge stopping") for e in self.edges if (ws := e.ws) is not None]
            if closing:
                await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=5)
            for task in [*background, *self._tasks]:
                task.cancel()
            await asyncio.gather(*background, *self._tasks, return_exceptions=True)
            self.out(self.status("final"))

    def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(self.command, line)
        loop.call_soon_threadsafe(self.stopping.set)


# -- command line ---------------------------------------------------------------------------

def read_token(path: str | None) -> str | None:
    """The enrolment token from ``path`` (mode 600 or stricter) or ``$ISTHMUS_EDGE_TOKEN``."""
    value = os.environ.pop("ISTHMUS_EDGE_TOKEN", None)
    if not path:
        return value or None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & 0o077:
            raise SystemExit(f"swarm: {path} is readable or writable by others (mode {mode & 0o777:o}); "
                             f"run 'chmod 600 {path}'")
        return fh.read().strip() or None


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if needed > soft:
        print(f"swarm: {needed} sockets need more than the open-file limit {soft}; "
              "split the edges over several swarm processes (--offset)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m isthmus.testing.swarm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bridge", required=True, help="ws://host:port of the bridge")
    parser.add_argument("--count", type=int, required=True, help="simulated edges in this process")
    parser.add_argument("--prefix", default="sim", help="edge names are PREFIX-NNNNN")
    parser.add_argument("--offset", type=int, default=0, help="index of this process's first edge")
    parser.add_argument("--token-file", help="file (mode 600) with the enrolment token "
                                             "(default $ISTHMUS_EDGE_TOKEN)")
    parser.add_argument("--report", help="append the JSON lines to this file instead of stdout")
    parser.add_argument("--initial", type=int, help="edges to start at once (default all; `start K` on "
                                                    "stdin starts more)")
    parser.add_argument("--rate", type=float, help="at most this many connection attempts per second")
    parser.add_argument("--per-address", type=int, default=40, help="edges per loopback source address")
    parser.add_argument("--ping", type=float, default=15.0, help="ping the bridge every S seconds (0: never)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status lines")
    parser.add_argument("--duration", type=float, help="quit after this many seconds")
    parser.add_argument("--no-stdin", action="store_true", help="read no commands; end of stdin does not quit")
    args = parser.parse_args(argv)
    token = read_token(args.token_file)
    raise_fd_limit(args.count + 64)
    report: IO[str] | None = open(args.report, "a") if args.report else None

    def out(record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        if report is not None:
            report.write(line + "\n")
            report.flush()
        else:
            print(line, flush=True)

    async def amain() -> None:
        swarm = Swarm(args.bridge, token, args.count, prefix=args.prefix, offset=args.offset,
                      per_address=args.per_address, rate=args.rate, ping=args.ping, out=out)
        initial = args.count if args.initial is None else args.initial
        await swarm.run(initial, args.interval, args.duration, commands=not args.no_stdin)

    try:
        import uvloop
    except ImportError:
        asyncio.run(amain())
    else:
        uvloop.run(amain())
    finally:
        if report is not None:
            report.close()


# -- driving a swarm process from Python ----------------------------------------------------

class SwarmProcess:
    """``python -m isthmus.testing.swarm`` as a subprocess, its JSON lines read on a thread.

        with SwarmProcess(f"ws://127.0.0.1:{port}", 1000, token, initial=0) as swarm:
            swarm.start_edges(200)
            swarm.wait_connected(200, timeout=60)
            rows = swarm.edges()
    """

    def __init__(self, bridge: str, count: int, token: str, *, prefix: str = "sim", offset: int = 0,
                 initial: int | None = None, rate: float | None = None, interval: float = 0.25,
                 log: str | Path | None = None, extra: list[str] | None = None) -> None:
        args = [sys.executable, "-m", "isthmus.testing.swarm", "--bridge", bridge, "--count", str(count),
                "--prefix", prefix, "--offset", str(offset), "--interval", str(interval), *(extra or [])]
        if initial is not None:
            args += ["--initial", str(initial)]
        if rate is not None:
            args += ["--rate", str(rate)]
        self.count = count
        self._log = open(log, "ab") if log else None
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, "ISTHMUS_EDGE_TOKEN": token, "PYTHONUNBUFFERED": "1"},
                                     text=True, start_new_session=True)
        self.ready: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name="swarm-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                event = record.get("event")
                if event == "ready":
                    self.ready = record
                elif event == "status":
                    self.last = record
                elif event == "final":
                    self.final = self.last = record
                elif event == "edges":
                    self._replies.put(record)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def start_edges(self, k: int) -> None:
        self.send(f"start {k}")

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first status (from now on, or the latest) that satisfies ``predicate``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self.last is not None and predicate(self.last):
                    return self.last
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._changed.wait(min(left, 0.5))

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.ready is None:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"the swarm did not start (exit code {self.proc.poll()})")
                self._changed.wait(0.2)
            return self.ready

    def wait_connected(self, n: int, timeout: float) -> dict[str, Any] | None:
        return self.wait(lambda s: bool(s["connected"] >= n), timeout)

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        """A fresh status line."""
        asked = time.time() - 0.01  # status times are rounded to the millisecond
        self.send("status")
        status = self.wait(lambda s: bool(s["time"] >= asked), timeout)
        if status is None:
            raise TimeoutError("the swarm did not answer `status`")
        return status

    def edges(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every simulated edge's counters (see EDGE_FIELDS)."""
        self.send("edges")
        reply = self._replies.get(timeout=timeout)
        fields = reply["fields"]
        return [dict(zip(fields, row, strict=True)) for row in reply["rows"]]

    def close(self, timeout: float = 20.0) -> dict[str, Any] | None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send("quit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self._log is not None:
            self._log.close()
        return self.final

    def __enter__(self) -> SwarmProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- measuring a process and listing the edges (bench/edges.py, tests/scale) ------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def list_edges(client: Any, limit: int = 1000) -> tuple[dict[str, Any], int, bool]:
    """Every edge through ``GET /edge/list``, following ``next`` page by page when the bridge
    pages (``?limit=&after=``); returns (edges, pages, paged). ``client`` is an httpx.Client
    with the bridge's base URL and a token."""
    edges: dict[str, Any] = {}
    pages = 0
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = client.get("/edge/list", params=params)
        response.raise_for_status()
        body = response.json()
        pages += 1
        edges.update(body["edges"])
        if "next" not in body:
            return edges, pages, False
        after = body["next"]
        if after is None:
            return edges, pages, True
        if pages > 100_000:
            raise RuntimeError("/edge/list keeps paging")


if __name__ == "__main__":
    main()
