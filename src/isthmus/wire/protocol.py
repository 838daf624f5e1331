"""The wire between bridge and edge: msgpack frames, one table.

Each WebSocket message is a msgpack array of frames (writes are coalesced); each frame
is a map with ``t`` (its type) and the fields below. Binary bodies travel as bytes.

=========  ==============  ========================================================
frame      direction       fields
=========  ==============  ========================================================
hello      edge → bridge   v (protocol version), name, token, plugins (manifests)
welcome    bridge → edge   edges (topology), max_body
refuse     bridge → edge   reason, retry (seconds the edge should wait)
req        bridge → edge   id, m (method), p (path), q (query bytes), h (headers),
                           pr (principal [name, role]), dl (deadline, s),
                           b (body bytes) or s=True (body follows as chunks)
res        edge → bridge   id, st (status), h (headers), b (body) or s=True
chunk      both            id, b (bytes), end (bool)
credit     both            id, n (more chunks the receiver accepts)
cancel     both            id (bridge: client gone / deadline; edge: stop streaming)
notify     edge → bridge   plugin, topic, data, ow (owner principal or None)
manifest   edge → bridge   plugins (re-sent after a reload changes them)
topology   bridge → edge   edges
ping/pong  both            ts
shutdown   bridge → edge   reason
=========  ==============  ========================================================
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import ProtocolError

PROTOCOL_VERSION = 1

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
PING = "ping"
PONG = "pong"
SHUTDOWN = "shutdown"

FRAME_TYPES = frozenset({HELLO, WELCOME, REFUSE, REQUEST, RESPONSE, CHUNK, CREDIT, CANCEL, NOTIFY,
                         MANIFEST, TOPOLOGY, PING, PONG, SHUTDOWN})

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


def pack(frames: list[dict[str, Any]]) -> bytes:
    return msgpack.packb(frames, **_packer_opts)


class _TooManyContainers(Exception):
    pass


def unpack(data: bytes, max_containers: int | None = None) -> list[dict[str, Any]]:
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
