"""Edges calling their children: an edge's ``req`` frames, forwarded to ``<edge>.<…>`` edges.

A plugin on an edge (``pilots``) reaches the edges it started (pilot jobs, named
``<edge>.<pool>.<jobid>``) with ``Plugin.edge_calls``; the edge sends the call to the bridge
as a ``req`` frame on its own link (``edge/calls.py``), path ``/{child}/{plugin}/...``. Here
the bridge checks that the target is a child of the calling edge — named ``<edge>.<…>`` *and*
enrolled with a child token the edge's own token signed, so an enrolled edge never reaches
other edges, another team's ``<edge>.gpu`` or the bridge's own plugins (403) — and that the
frame names the principal it runs as (400), then splices the call onto the child's link:
the same frames, the principal of the frame, the deadline capped as a
client's, bodies over ``max_body`` refused (413), streamed bodies relayed chunk by chunk
with credit on both links, and a cancel on either side ends the other.

Calls an edge starts carry negative ids, so they never meet the bridge's own (positive)
ids in the link's table. At most ``MAX_OPEN`` such calls per edge are open at once.
The bridge → edge path (``proxy.py``) is untouched: only ``cancel`` gains a branch.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..types import Principal
from ..wire import protocol as P
from ..wire.call import Call, CallAborted, ServerCall
from ..wire.peer import LinkClosed, Peer

log = logging.getLogger("isthmus.bridge.edge_calls")

MAX_DEADLINE = 3600.0  # as a client may ask with X-Isthmus-Deadline (proxy.MAX_DEADLINE)
MAX_OPEN = 1024  # calls one edge may have open through the bridge at once
DROP_HEADERS = frozenset({b"authorization", b"cookie", b"host", b"connection", b"upgrade", b"transfer-encoding"})


class Link(Protocol):
    """What this module needs of ``edges.EdgeLink``."""

    name: str
    peer: Peer
    credential: str  # digest of the enrolment token it connected with (a child: its parent's)
    grant_name: str  # the name that token must allow (a child: its parent's name)

    def call(self, rid: int, deadline: float) -> Call: ...


class Registry(Protocol):
    """What this module needs of ``edges.EdgeRegistry``."""

    max_body: int
    ids: Any  # itertools.count: the bridge's request ids

    def get(self, name: str) -> Any: ...


def handlers(registry: Registry, edge: Link) -> dict[str, Callable[[P.Frame], None]]:
    """Frame handlers for an enrolled edge's link: its ``req`` frames, and ``cancel`` for both roles."""
    open_calls: set[int] = set()

    def on_request(frame: P.Frame) -> None:
        rid, path = frame.get("id"), frame.get("p")
        if not isinstance(rid, int) or rid >= 0:
            raise ValueError("calls an edge starts carry negative ids")
        if not isinstance(path, str) or not isinstance(frame.get("m"), str):
            raise ValueError("a req frame needs a method and a path")
        call = ServerCall(edge.peer, frame)
        problem = _refusal(registry, edge, path, len(open_calls))
        if problem is None and not _well_formed(frame.get("pr")):
            # the child treats a call without a principal as a trusted in-process one
            problem = 400, "a call an edge starts carries the principal it runs as ([name, role, id])"
        if problem is not None:
            call.error(*problem)
            call.finish()
            return
        open_calls.add(rid)
        call.task = asyncio.create_task(_splice(registry, edge, call, frame))
        call.task.add_done_callback(lambda _t: open_calls.discard(rid))

    def on_cancel(frame: P.Frame) -> None:
        call = edge.peer.calls.get(frame["id"])
        if isinstance(call, Call):
            call.on_cancel()
        elif isinstance(call, ServerCall):
            call.cancel()

    return {P.REQUEST: on_request, P.CANCEL: on_cancel}


def _well_formed(pr: Any) -> bool:
    try:
        return Principal.from_wire(pr) is not None
    except (TypeError, ValueError):
        return False


def child_of(parent: str, target: str) -> bool:
    return target.startswith(parent + ".") and len(target) > len(parent) + 1


def _refusal(registry: Registry, edge: Link, path: str, open_now: int) -> tuple[int, str] | None:
    target = path.split("/", 2)[1] if path.count("/") >= 2 else ""
    if not child_of(edge.name, target):
        return 403, (f"edge {edge.name} may call only its own children ({edge.name}.<…>), not {target!r}; "
                     "other edges and the bridge's plugins are reached through the bridge's API with a token")
    if open_now >= MAX_OPEN:
        return 429, f"edge {edge.name} has {MAX_OPEN} calls open through the bridge; wait for some to end"
    child = registry.get(target)
    if child is None:
        return 404, f"no edge named {target!r} is connected to this bridge"
    if not is_child_link(edge, child):
        # a name alone proves nothing: "lab.gpu" may be another team's edge with its own token
        return 403, (f"edge {target!r} did not enrol with a child token of edge {edge.name}; "
                     "an edge reaches only the pilots it started")
    return None


def is_child_link(parent: Link, child: Link) -> bool:
    """Whether ``child`` enrolled with a child token that ``parent``'s own enrolment token signed."""
    return (bool(parent.credential) and child.grant_name == parent.name and child.name != parent.name
            and hmac.compare_digest(child.credential, parent.credential))


async def _splice(registry: Registry, edge: Link, incoming: ServerCall, frame: P.Frame) -> None:
    """Forward one call to the child and its answer back; ends both calls whatever happens."""
    _, target, rest = frame["p"].split("/", 2)
    child = registry.get(target)
    dl = frame.get("dl")
    deadline = min(float(dl), MAX_DEADLINE) if isinstance(dl, int | float) and dl > 0 else 60.0
    streamed = bool(frame.get("s"))
    body = frame.get("b") or b""
    if not streamed and len(body) > registry.max_body:
        incoming.error(413, f"request body of {len(body)} bytes is over the limit of {registry.max_body} bytes")
        incoming.finish()
        return
    out: P.Frame = {"t": P.REQUEST, "m": frame["m"], "p": "/" + rest, "q": frame.get("q") or b"",
                    "h": [h for h in frame.get("h") or () if bytes(h[0]).lower() not in DROP_HEADERS],
                    "pr": frame.get("pr")}
    if isinstance(frame.get("x"), str):
        out["x"] = frame["x"]
    if not streamed:
        out["b"] = body
    call: Call = child.call(next(registry.ids), deadline)
    pump: asyncio.Task[None] | None = None
    try:
        stream = call.send(out, streamed)
        if stream is not None:
            pump = asyncio.create_task(_pump(incoming, stream, registry.max_body, call))
        try:
            response = await asyncio.wait_for(asyncio.shield(call.response), deadline)
        except TimeoutError:
            incoming.error(504, f"edge {target} did not answer within {deadline:g} s")
            return
        except (CallAborted, LinkClosed) as exc:
            incoming.error(503, f"edge {target}: {exc}; the request may not have completed")
            return
        call.answered = True
        incoming.start(int(response.get("st") or 502), list(response.get("h") or []))
        if not response.get("s"):
            await incoming.write(response.get("b") or b"", False)
            return
        inbound = call.body()
        while inbound is not None:
            data = await inbound.read()
            if data is None:
                break
            await incoming.write(data, True)
        await incoming.write(b"", False)
    except (CallAborted, LinkClosed, ConnectionError) as exc:
        incoming.error(502, f"edge {target} broke off its answer: {exc}")
    except _TooLarge:
        incoming.error(413, f"request body is over the limit of {registry.max_body} bytes")
    finally:
        if pump is not None and not pump.done():
            pump.cancel()
        call.finish()
        incoming.finish()


class _TooLarge(Exception):
    pass


async def _pump(incoming: ServerCall, stream: Any, max_body: int, call: Call) -> None:
    """Relay a streamed request body from the calling edge to the child, within ``max_body``."""
    total = 0
    try:
        while True:
            data, more = await incoming.read()
            total += len(data)
            if total > max_body:
                call.fail(_TooLarge())
                return
            await stream.write(data, end=not more)
            if not more:
                return
    except (CallAborted, LinkClosed, ConnectionError) as exc:
        call.fail(CallAborted(f"the calling edge's body ended early: {exc}"))
