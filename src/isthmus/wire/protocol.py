"""The frames between bridge and edge: one table, msgpack encoding, sizes.

Each WebSocket message is a msgpack array of frames (writes are coalesced); each frame is
a map with ``t`` (its type) and the fields of its TypedDict below. Binary bodies travel
as bytes; notification data as JSON bytes. ``FRAMES`` is the table the docs quote
(docs/architecture.md, "The wire"); a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, get_type_hints

import msgpack

from ..errors import ProtocolError

PROTOCOL_VERSION = 2  # 2: topology as deltas to watching edges (#12)

HELLO = "hello"
WELCOME = "welcome"
REFUSE = "refuse"
REQUEST = "req"
RESPONSE = "res"
CHUNK = "chunk"
CREDIT = "credit"
CANCEL = "cancel"
NOTIFY = "notify"
MANIFEST = "manifest"
TOPOLOGY = "topology"
WATCH = "watch"
PING = "ping"
PONG = "pong"
SHUTDOWN = "shutdown"

# A decoded frame as handlers see it (the TypedDicts below say which keys each type has).
Frame = dict[str, Any]
Header = list[bytes]  # [name, value]


class Hello(TypedDict):
    """edge → bridge, first: who the edge is and what it serves."""

    t: str
    v: int  # protocol version
    name: str
    token: str | None  # enrolment token
    plugins: dict[str, Any]  # plugin id -> manifest
    host: str
    pid: int
    resume: NotRequired[str]  # the key of the previous connection (reconnect over a half-open link)
    watch: NotRequired[bool]  # True: send this edge the topology (a snapshot, then deltas)


class Welcome(TypedDict):
    """bridge → edge: accepted (the topology follows only if the edge watches it)."""

    t: str
    version: int  # the topology's version now
    max_body: int
    key: str  # this connection's key; shown again as ``resume`` on reconnect


class Refuse(TypedDict):
    """bridge → edge: not accepted (or no longer)."""

    t: str
    reason: str
    retry: float  # seconds the edge should wait


class Request(TypedDict):
    """bridge → edge: one call; edge → bridge: a call to one of its children (negative ``id``,
    ``p`` is ``/{child}/{plugin}/...``), which the bridge forwards to that child."""

    t: str
    id: int
    m: str  # method
    p: str  # path, /plugin/...
    q: bytes  # query string
    h: list[Header]
    pr: list[Any] | None  # principal [name, role, id]
    dl: float  # deadline, seconds
    b: NotRequired[bytes]  # the body, when small
    s: NotRequired[bool]  # True: the body follows as chunks
    x: NotRequired[str]  # the bridge's request id (X-Request-ID): logs and request.state.request_id


class Response(TypedDict):
    """the answering side → the asking side: the call's status and headers."""

    t: str
    id: int
    st: int  # status
    h: list[Header]
    b: NotRequired[bytes]
    s: NotRequired[bool]


class Chunk(TypedDict):
    """both: a piece of a streamed body."""

    t: str
    id: int
    b: bytes
    end: bool


class Credit(TypedDict):
    """both: the receiver accepts n more chunks."""

    t: str
    id: int
    n: int


class Cancel(TypedDict):
    """both: bridge: the client left or the deadline passed; edge: stop streaming."""

    t: str
    id: int


class Notify(TypedDict):
    """edge → bridge: a plugin's event."""

    t: str
    plugin: str
    topic: str
    d: bytes  # one JSON value
    ow: list[Any] | None  # owner principal


class Manifest(TypedDict):
    """edge → bridge: plugins changed after a reload."""

    t: str
    plugins: dict[str, Any]


class Topology(TypedDict):
    """bridge → edge (watching ones): edges joined, left or changed their plugins.

    ``full``: ``joined`` is the whole view (after ``watch``); else a delta on version ``v - 1``.
    Edges are summaries: ``{"plugins": {id: {"title", "version"}}, "host", "connected_at"}``.
    """

    t: str
    v: int
    joined: dict[str, Any]  # name -> summary (also for changed manifests)
    left: list[str]
    full: bool


class Watch(TypedDict):
    """edge → bridge: start (a full ``topology`` follows) or stop receiving the topology."""

    t: str
    on: bool


class Ping(TypedDict):
    """both: liveness (answered with pong, same ts)."""

    t: str
    ts: float | None


class Shutdown(TypedDict):
    """bridge → edge: stop (an admin disconnected the edge)."""

    t: str
    reason: str


# frame type -> (direction, its TypedDict)
FRAMES: dict[str, tuple[str, type]] = {
    HELLO: ("edge → bridge", Hello),
    WELCOME: ("bridge → edge", Welcome),
    REFUSE: ("bridge → edge", Refuse),
    REQUEST: ("both", Request),  # edge → bridge: only to its children (bridge/edge_calls.py)
    RESPONSE: ("both", Response),
    CHUNK: ("both", Chunk),
    CREDIT: ("both", Credit),
    CANCEL: ("both", Cancel),
    NOTIFY: ("edge → bridge", Notify),
    MANIFEST: ("edge → bridge", Manifest),
    TOPOLOGY: ("bridge → edge", Topology),
    WATCH: ("edge → bridge", Watch),
    PING: ("both", Ping),
    PONG: ("both", Ping),
    SHUTDOWN: ("bridge → edge", Shutdown),
}
FRAME_TYPES = frozenset(FRAMES)


def frame_fields(kind: str) -> list[str]:
    """The fields of frame type ``kind`` besides ``t``, in table order."""
    return [name for name in get_type_hints(FRAMES[kind][1]) if name != "t"]


# Bodies up to this size travel inside the req/res frame; larger ones stream as chunks.
INLINE_BODY_MAX = 256 * 1024
CHUNK_SIZE = 1024 * 1024
# Chunks a sender may have in flight per stream before it waits for credit.
CREDIT_WINDOW = 8
# A coalesced WebSocket message is closed once it holds this many bytes.
MESSAGE_TARGET = 4 * 1024 * 1024
# The largest WebSocket message either side accepts.
MAX_MESSAGE = 16 * 1024 * 1024
# The largest message before an edge is enrolled (its hello), and what it may decode to.
MAX_HELLO = 256 * 1024
HELLO_CONTAINERS = 20_000
# Maps and arrays one message from an edge may decode to: a byte of msgpack can become a
# 64-byte Python dict, so the count, not the message size, bounds the decoded memory.
MAX_CONTAINERS = 250_000

_packer_opts: dict[str, Any] = {"use_bin_type": True}


def pack(frames: list[Frame]) -> bytes:
    data: bytes = msgpack.packb(frames, **_packer_opts)
    return data


class _TooManyContainers(Exception):
    pass


def unpack(data: bytes, max_containers: int | None = None) -> list[Frame]:
    """Decode one WebSocket message; anything that is not a list of typed frames is an error.

    With ``max_containers`` (messages from edges) decoding stops past that many maps and
    arrays, so a small message of empty maps cannot cost gigabytes.
    """
    try:
        if max_containers is None:
            frames = msgpack.unpackb(data, raw=False, strict_map_key=False)
        else:
            left = max_containers

            def count(obj: Any) -> Any:
                nonlocal left
                left -= 1
                if left < 0:
                    raise _TooManyContainers
                return obj

            frames = msgpack.unpackb(data, raw=False, strict_map_key=False, object_hook=count, list_hook=count,
                                     max_array_len=max_containers, max_map_len=max_containers)
    except _TooManyContainers:
        raise ProtocolError(f"message decodes to more than {max_containers} maps and arrays") from None
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable message: {exc}") from exc
    if not isinstance(frames, list):
        raise ProtocolError("a message must be a list of frames")
    for frame in frames:
        if not isinstance(frame, dict) or frame.get("t") not in FRAME_TYPES:
            raise ProtocolError(f"bad frame: {str(frame)[:80]}")
    return frames
