"""Child enrolment tokens (pilots) and edges calling their children, against a real bridge.

A child token lets exactly one name, ``<parent>.<…>``, enrol while the parent's own token
is current; an edge's ``req`` frames reach only its children.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import orjson
import pytest

from isthmus.bridge import child_tokens
from isthmus.bridge.auth import revoke_token
from isthmus.testing.stack import Stack, poll_for
from isthmus.types import Principal, Role
from isthmus.wire import protocol as P

from .fake_edge import FakeEdge

ALICE = Principal("alice", Role.user, "alice").to_wire()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(plugins=["sysinfo"], edge="other", workdir=tmp_path_factory.mktemp("child")) as s:
        yield s


@pytest.fixture(scope="module")
def parent_token(stack: Stack) -> str:
    return stack.create_token("edge", edge="hpc1")


def _edges(stack: Stack) -> set[str]:
    return set(stack.client().list_edges())


def _refused(edge: FakeEdge) -> str:
    assert edge.first["t"] == P.REFUSE, edge.first
    return str(edge.first["reason"])


def test_a_child_token_enrols_its_own_name_only(stack: Stack, parent_token: str) -> None:
    token = child_tokens.mint(parent_token, "hpc1", "hpc1.pool.101", 60)
    child = FakeEdge(stack.url, "hpc1.pool.101", token)
    try:
        assert child.first["t"] == P.WELCOME
        poll_for(lambda: "hpc1.pool.101" in _edges(stack), 10, what="the child in /edge/list")
        other = FakeEdge(stack.url, "hpc1.pool.102", token)  # the same token, another child's name
        assert "is for edge 'hpc1.pool.101'" in _refused(other)
        parent = FakeEdge(stack.url, "hpc1", token)  # nor the parent's own name
        assert "not 'hpc1'" in _refused(parent)
    finally:
        child.close()


def test_a_forged_mac_is_refused(stack: Stack, parent_token: str) -> None:
    token = child_tokens.mint(parent_token, "hpc1", "hpc1.pool.103", 60)
    signed, _, mac = token.rpartition(".")
    forged = f"{signed}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    assert "forged" in _refused(FakeEdge(stack.url, "hpc1.pool.103", forged))
    # signed with a token the bridge does not know
    assert "forged" in _refused(FakeEdge(stack.url, "hpc1.pool.103",
                                         child_tokens.mint("ist_not-a-real-token", "hpc1", "hpc1.pool.103", 60)))
    assert "hpc1.pool.103" not in _edges(stack)


def test_a_parent_the_grant_does_not_allow_is_refused(stack: Stack, parent_token: str) -> None:
    token = child_tokens.mint(parent_token, "hpc2", "hpc2.pool.1", 60)  # hpc1's token vouching for hpc2's child
    assert "forged, or the parent's token was revoked" in _refused(FakeEdge(stack.url, "hpc2.pool.1", token))


def test_an_expired_child_token_is_refused(stack: Stack, parent_token: str) -> None:
    token = child_tokens.mint(parent_token, "hpc1", "hpc1.pool.104", 60, now=time.time() - 120)
    assert "expired" in _refused(FakeEdge(stack.url, "hpc1.pool.104", token))


def _hand_made(parent_token: str, claims: dict[str, object]) -> str:
    """A correctly signed token with claims ``mint`` would never write."""
    key = hashlib.sha256(parent_token.encode()).hexdigest()
    payload = base64.urlsafe_b64encode(orjson.dumps({**claims, "kid": child_tokens.key_id(key)})).rstrip(b"=")
    signed = child_tokens.PREFIX + payload.decode()
    mac = base64.urlsafe_b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"{signed}.{mac.decode()}"


def test_names_outside_the_parent_and_overlong_lives_are_refused(stack: Stack, parent_token: str) -> None:
    with pytest.raises(child_tokens.ChildTokenError):
        child_tokens.mint(parent_token, "hpc1", "hpc1evil", 60)
    outside = _hand_made(parent_token, {"name": "hpc1evil", "parent": "hpc1", "exp": int(time.time()) + 60})
    assert "is not a child of 'hpc1'" in _refused(FakeEdge(stack.url, "hpc1evil", outside))
    forever = _hand_made(parent_token, {"name": "hpc1.p.1", "parent": "hpc1", "exp": int(time.time()) + 10 ** 7})
    assert "at most 24 h" in _refused(FakeEdge(stack.url, "hpc1.p.1", forever))


def test_revoking_the_parent_token_drops_its_children(stack: Stack) -> None:
    token, entry = stack.create_token_entry("edge", edge="hpc9")
    child_token = child_tokens.mint(token, "hpc9", "hpc9.pool.1", 300)
    child = FakeEdge(stack.url, "hpc9.pool.1", child_token)
    assert child.first["t"] == P.WELCOME
    assert revoke_token(stack.tokens_file, entry["id"])
    assert child.closed(timeout=15), "the child's link stays open after its parent's token was revoked"
    poll_for(lambda: "hpc9.pool.1" not in _edges(stack), 10, what="the child gone from /edge/list")
    time.sleep(1.1)  # the token file is re-read at most once a second
    assert "forged, or the parent's token was revoked" in _refused(FakeEdge(stack.url, "hpc9.pool.1", child_token))


def _request(edge: FakeEdge, rid: int, path: str) -> dict[str, object]:
    """Send a req frame from ``edge`` and return the bridge's answer to it (pings aside)."""
    edge.send({"t": P.REQUEST, "id": rid, "m": "GET", "p": path, "q": b"", "h": [], "pr": ALICE,
               "dl": 5.0})
    end = time.monotonic() + 10
    while time.monotonic() < end:
        for frame in edge.frames(10):
            if frame.get("id") == rid and frame["t"] in (P.RESPONSE, P.CANCEL):
                return frame
    raise AssertionError("no answer")


def test_an_edge_reaches_its_children_and_nothing_else(stack: Stack, parent_token: str) -> None:
    parent = FakeEdge(stack.url, "hpc1", parent_token)
    child = FakeEdge(stack.url, "hpc1.pool.105", child_tokens.mint(parent_token, "hpc1", "hpc1.pool.105", 60))
    try:
        assert parent.first["t"] == P.WELCOME and child.first["t"] == P.WELCOME
        for path in ("/other/sysinfo/info", "/bridge/anything", "/hpc1/probe/x", "/hpc10.pool/probe/x"):
            answer = _request(parent, -1, path)
            assert answer["st"] == 403 and b"only its own children" in answer["b"], (path, answer)
        assert _request(parent, -2, "/hpc1.pool.999/probe/x")["st"] == 404  # a child that is not connected

        # a call to the child crosses as a req frame with the child's path, the principal and a capped deadline
        parent.send({"t": P.REQUEST, "id": -3, "m": "POST", "p": "/hpc1.pool.105/probe/echo", "q": b"a=1",
                     "h": [[b"authorization", b"Bearer x"], [b"x-k", b"v"]], "pr": ALICE,
                     "dl": 10 ** 9, "b": b"ping"})
        got = next(f for f in child.frames(10) if f["t"] == P.REQUEST)
        assert got["p"] == "/probe/echo" and got["q"] == b"a=1" and got["b"] == b"ping" and got["id"] > 0
        assert got["pr"] == ALICE and got["dl"] == 3600.0
        assert [b"authorization", b"Bearer x"] not in got["h"] and [b"x-k", b"v"] in got["h"]
        child.send({"t": P.RESPONSE, "id": got["id"], "st": 201, "h": [[b"content-type", b"text/plain"]],
                    "b": b"pong"})
        answer = next(f for f in parent.frames(10) if f.get("id") == -3)
        assert answer["t"] == P.RESPONSE and answer["st"] == 201 and answer["b"] == b"pong"

        # positive ids belong to the bridge: using one is a protocol error that closes the link
        parent.send({"t": P.REQUEST, "id": 7, "m": "GET", "p": "/hpc1.pool.105/probe/x", "q": b"", "h": [],
                     "pr": None, "dl": 5.0})
        assert parent.closed(timeout=10)
    finally:
        parent.close()
        child.close()


def test_a_name_alone_makes_no_child(stack: Stack, parent_token: str) -> None:
    """Another team's edge named like a child of hpc1 is neither reachable from hpc1 nor
    enrolable with a child token hpc1 mints."""
    other = FakeEdge(stack.url, "hpc1.gpu", stack.create_token("edge", edge="hpc1.gpu"))
    parent = FakeEdge(stack.url, "hpc1", parent_token)
    try:
        assert other.first["t"] == P.WELCOME and parent.first["t"] == P.WELCOME
        answer = _request(parent, -1, "/hpc1.gpu/probe/x")
        assert answer["st"] == 403 and b"did not enrol with a child token of edge hpc1" in answer["b"], answer
        try:
            leaked = [f for f in other.frames(0.5) if f["t"] == P.REQUEST]
        except TimeoutError:
            leaked = []
        assert not leaked, "the call reached the other team's edge"
    finally:
        other.close()
        parent.close()
    # with the other team's edge gone, hpc1 still cannot enrol a pilot under its name (nor under hpc1.*)
    stack.create_token("edge", edge="hpc1.team.*")
    for name in ("hpc1.gpu", "hpc1.team.7"):
        usurper = FakeEdge(stack.url, name, child_tokens.mint(parent_token, "hpc1", name, 60))
        assert "belongs to another enrolment token" in _refused(usurper), name


def test_a_call_without_a_principal_is_refused(stack: Stack, parent_token: str) -> None:
    """A child runs a call without a principal as a trusted in-process one: none may cross."""
    parent = FakeEdge(stack.url, "hpc1", parent_token)
    child = FakeEdge(stack.url, "hpc1.pool.107", child_tokens.mint(parent_token, "hpc1", "hpc1.pool.107", 60))
    try:
        parent.send({"t": P.REQUEST, "id": -4, "m": "GET", "p": "/hpc1.pool.107/probe/x", "q": b"", "h": [],
                     "dl": 5.0})
        answer = next(f for f in parent.frames(10) if f.get("id") == -4)
        assert answer["st"] == 400 and b"principal" in answer["b"], answer
    finally:
        parent.close()
        child.close()


def test_streamed_bodies_cross_to_the_child_and_back(stack: Stack, parent_token: str) -> None:
    parent = FakeEdge(stack.url, "hpc1", parent_token)
    child = FakeEdge(stack.url, "hpc1.pool.106", child_tokens.mint(parent_token, "hpc1", "hpc1.pool.106", 60))
    try:
        parent.send({"t": P.REQUEST, "id": -9, "m": "PUT", "p": "/hpc1.pool.106/probe/up", "q": b"", "h": [],
                     "pr": ALICE, "dl": 10.0, "s": True},
                    {"t": P.CHUNK, "id": -9, "b": b"first-", "end": False},
                    {"t": P.CHUNK, "id": -9, "b": b"second", "end": True})
        got: list[dict[str, object]] = []
        while not any(f["t"] == P.CHUNK and f.get("end") for f in got):
            got += [f for f in child.frames(10) if f["t"] in (P.REQUEST, P.CHUNK)]
        request = got[0]
        assert request["t"] == P.REQUEST and request["s"] is True
        assert b"".join(f["b"] for f in got[1:]) == b"first-second"
        rid = request["id"]
        child.send({"t": P.RESPONSE, "id": rid, "st": 200, "h": [], "s": True},
                   {"t": P.CHUNK, "id": rid, "b": b"back-", "end": False},
                   {"t": P.CHUNK, "id": rid, "b": b"again", "end": True})
        answer: dict[str, object] = {}
        while not answer:  # credit frames for the request body come first
            answer = next((f for f in parent.frames(10) if f.get("id") == -9 and f["t"] == P.RESPONSE), {})
        assert answer["st"] == 200 and answer["b"] == b"back-again"
    finally:
        parent.close()
        child.close()
