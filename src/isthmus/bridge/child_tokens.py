"""Child enrolment tokens: an edge lets a job it started (a pilot) enrol under one child name.

    ist_c1.<payload>.<mac>    payload = base64url(JSON {name, parent, exp, kid})
                              mac     = base64url(HMAC-SHA256(key, "ist_c1." + payload))
                              key     = SHA-256 digest (hex) of the parent's own enrolment token

Stateless, so it works with several bridges: the bridge stores exactly that digest for every
enrolment token, and ``kid`` (a short hash of the digest) finds the grant without trying them
all. The bridge accepts a child token when the MAC checks against a current grant that allows
``parent``, ``name`` is ``parent + "." + something`` that no other grant enrols on its own
(one that allows ``name`` but not ``parent``), and ``exp`` is in the future and at most
``MAX_TTL`` ahead. The child's link keeps the parent grant's digest as its credential, so
revoking the parent's token drops its children too. The parent's own token never leaves the
parent: the job (where users' tasks run) only ever sees the child token.

Both sides use this module: the edge mints (``mint``), the bridge checks (``verify``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

PREFIX = "ist_c1."
MAX_TTL = 24 * 3600  # a child token lives at most a day; pilots with longer walltimes re-enrol never
KID_LENGTH = 12


class Grant(Protocol):
    """What the bridge knows of an enrolment token (``auth.EdgeGrant``)."""

    def allows(self, name: str) -> bool: ...


class ChildTokenError(ValueError):
    """The child token is not acceptable; the message says why (sent back in ``refuse``)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(token_digest: str) -> str:
    """The short id of a grant's digest that a child token names (not enough to guess the key)."""
    return hashlib.sha256(("kid:" + token_digest).encode()).hexdigest()[:KID_LENGTH]


def _mac(token_digest: str, signed: str) -> str:
    return _b64(hmac.new(token_digest.encode(), signed.encode(), hashlib.sha256).digest())


def is_child_token(token: str) -> bool:
    return token.startswith(PREFIX)


def mint(parent_token: str, parent: str, name: str, ttl: float, now: float | None = None) -> str:
    """A token that lets ``name`` (``parent.<…>``) enrol for ``ttl`` seconds (at most a day)."""
    if not name.startswith(parent + ".") or len(name) <= len(parent) + 1:
        raise ChildTokenError(f"a child of edge {parent!r} must be named {parent}.<something>, not {name!r}")
    token_digest = hashlib.sha256(parent_token.encode()).hexdigest()
    exp = int((now if now is not None else time.time()) + max(1.0, min(ttl, MAX_TTL)))
    payload = _b64(orjson.dumps({"name": name, "parent": parent, "exp": exp, "kid": key_id(token_digest)}))
    signed = PREFIX + payload
    return f"{signed}.{_mac(token_digest, signed)}"


def parse(token: str) -> dict[str, Any]:
    """The claims of a child token (not yet verified); ChildTokenError when malformed."""
    if not is_child_token(token) or len(token) > 2048:
        raise ChildTokenError("not a child token")
    parts = token[len(PREFIX):].split(".")
    if len(parts) != 2:
        raise ChildTokenError("a child token is ist_c1.<payload>.<mac>")
    try:
        claims = orjson.loads(_unb64(parts[0]))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ChildTokenError("the child token's payload is not base64url JSON") from exc
    if not (isinstance(claims, dict) and isinstance(claims.get("name"), str)
            and isinstance(claims.get("parent"), str) and isinstance(claims.get("exp"), int)
            and isinstance(claims.get("kid"), str)):
        raise ChildTokenError("the child token's payload needs name, parent, exp and kid")
    return claims


def verify(token: str, name: str, grants: Iterable[tuple[str, Grant]], now: float | None = None) -> tuple[str, str]:
    """(the parent grant's digest, the parent's name) when ``token`` lets edge ``name`` enrol.

    ``grants`` are the current (not revoked, not expired) enrolment grants, digest → grant.
    """
    claims = parse(token)
    now = time.time() if now is None else now
    parent, claimed = claims["parent"], claims["name"]
    if claimed != name:
        raise ChildTokenError(f"this child token is for edge {claimed!r}, not {name!r}")
    if not name.startswith(parent + ".") or len(name) <= len(parent) + 1:
        raise ChildTokenError(f"edge {name!r} is not a child of {parent!r} (children are named {parent}.<…>)")
    if claims["exp"] <= now:
        raise ChildTokenError("the child token has expired; the parent edge mints a new one per pilot")
    if claims["exp"] > now + MAX_TTL + 60:
        raise ChildTokenError(f"a child token may live at most {MAX_TTL // 3600} h")
    signed, _, mac = token.rpartition(".")
    current = list(grants)
    for token_digest, grant in current:
        if not hmac.compare_digest(key_id(token_digest), claims["kid"]):
            continue
        if hmac.compare_digest(_mac(token_digest, signed), mac) and grant.allows(parent):
            break
    else:
        raise ChildTokenError(f"no current enrolment token of edge {parent!r} signed this child token "
                              "(forged, or the parent's token was revoked)")
    for other_digest, other in current:
        # "hpc1.gpu" enrolled with its own token ("hpc1.gpu", "hpc1.*") is not hpc1's to take over;
        # a grant that allows the parent as well ("*") names no namespace of its own
        if other_digest != token_digest and other.allows(name) and not other.allows(parent):
            raise ChildTokenError(f"edge name {name!r} belongs to another enrolment token; "
                                  f"children of {parent!r} need names no other token enrols")
    return token_digest, parent
