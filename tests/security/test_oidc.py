"""OIDC access tokens against the real ``oidc-provider`` (node) and a real bridge and edge.

Tokens come from the provider itself (the code flow through its login page, or client
credentials); the bad ones the provider would never issue (not yet valid, another issuer,
``alg: none``) are signed here with the provider's own published key, or with a key it does
not publish.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from isthmus import ClientError
from isthmus.testing.oidc import AUDIENCE, OTHER_AUDIENCE, OidcProvider, log_in, new_key
from isthmus.testing.stack import Stack, poll_for

PSIJ = {"scheduler": "none", "plugins": {"psij": {"enabled": True, "allowed_directories": ["~", "/tmp"]}}}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OidcProvider, Stack]]:
    """The provider (its Explorer client knows this bridge's callback) and a bridge trusting it."""
    idp = OidcProvider(workdir=tmp_path_factory.mktemp("idp"))
    # Dozens of refused tokens from 127.0.0.1 here: the per-address throttle (tested in
    # tests/integration/test_accountability.py) would make later tests' answers depend on timing.
    bridge = Stack(plugins=["psij"], config={**PSIJ, "auth": {"oidc": idp.bridge_config()},
                                             "bridge": {"login_failures": 0}},
                   workdir=tmp_path_factory.mktemp("bridge"))
    idp.redirect_uris = [f"{bridge.url}/auth/oidc/callback"]
    with idp, bridge:
        yield idp, bridge


@pytest.fixture(scope="module")
def idp(both: tuple[OidcProvider, Stack]) -> OidcProvider:
    return both[0]


@pytest.fixture(scope="module")
def stack(both: tuple[OidcProvider, Stack]) -> Stack:
    return both[1]


def call(stack: Stack, token: str, method: str = "GET", path: str = "/auth/whoami", **kw: Any) -> httpx.Response:
    return httpx.request(method, stack.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)


def sign(claims: dict[str, Any], jwk: dict[str, Any], **header: Any) -> str:
    return jwt.encode(claims, jwt.PyJWK(jwk).key, algorithm="RS256", headers={"kid": jwk["kid"], **header})


def b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """Signed by hand: PyJWT itself refuses a public key as an HMAC secret."""
    signing_input = f"{b64({'alg': 'HS256', 'kid': kid})}.{b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def claims(idp: OidcProvider, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": idp.issuer, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 300,
            "groups": ["hpc-admins"], **changes}


def refused(response: httpx.Response, reason: str) -> bool:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    return bool(response.json()["detail"] == f"access token refused: {reason}")


def test_each_role_gets_its_rights(idp: OidcProvider, stack: Stack) -> None:
    alice, viewer, root = (idp.user_token(u) for u in ("alice", "viewer", "root"))
    assert call(stack, alice).json() == {"name": "Alice Liddell", "role": "user"}
    assert call(stack, root).json() == {"name": "Root Admin", "role": "admin"}
    assert call(stack, viewer).json() == {"name": "Vera Viewer", "role": "viewer"}

    psij = stack.client(alice).get_edge_client("test").get_plugin("psij")
    job_id = psij.submit_job({"executable": "/bin/echo", "arguments": ["sso"]}, executor="local")
    assert psij.wait(job_id, timeout=30)["state"] == "DONE"
    assert psij.get_job_status(job_id)["owner"] == "oidc:alice"  # ownership follows oidc:<sub>

    assert call(stack, viewer, path="/edge/list").status_code == 200
    submit = call(stack, viewer, "POST", f"/test/psij/submit_job/{psij.sid}", json={"job_spec": {}})
    assert submit.status_code == 403 and "may only read" in submit.text
    other = stack.client(idp.service_token("svc-user")).get_edge_client("test").get_plugin("psij")
    with pytest.raises(ClientError) as err:  # another principal does not see alice's job
        other.get_job_status(job_id)
    assert err.value.status_code == 404

    assert call(stack, alice, "POST", "/test/_edge/reload").status_code == 403
    assert call(stack, root, "POST", "/test/_edge/reload").status_code == 200
    service = idp.service_token("svc-admin")  # client credentials: the service account's groups
    assert call(stack, service).json() == {"name": "svc-admin", "role": "admin"}

    nobody = call(stack, idp.user_token("nobody"))
    assert nobody.status_code == 403 and "maps to none in auth.oidc.role_map" in nobody.text
    assert call(stack, stack.admin_token).json()["role"] == "admin"  # API tokens keep working


def test_bad_tokens_are_refused_naming_the_check(idp: OidcProvider, stack: Stack) -> None:
    key = idp.private_key
    assert call(stack, sign(claims(idp), key)).status_code == 200  # the provider's key signs what it means
    # expiry: the provider's "short" client issues tokens that live one second (leeway 1 s)
    short = idp.service_token("short")
    poll_for(lambda: refused(call(stack, short), "token expired"), 10, 0.2, "the short token expired")
    assert refused(call(stack, short), "token expired")  # also once it was cached as valid
    now = int(time.time())
    assert refused(call(stack, sign(claims(idp, nbf=now + 120), key)), "token not yet valid")
    assert refused(call(stack, sign(claims(idp, iat=now + 120), key)), "token not yet valid")
    assert refused(call(stack, sign(claims(idp, exp=now - 120, iat=now - 900), key)), "token expired")

    stranger = new_key()  # a key the provider does not publish, under its kid and under its own
    forged = sign(claims(idp), {**stranger, "kid": key["kid"]})
    response = call(stack, forged)
    assert refused(response, "signature invalid")
    assert key["kid"] not in response.text and key["n"][:20] not in response.text
    assert refused(call(stack, sign(claims(idp), stranger)), "signature invalid")

    assert refused(call(stack, idp.service_token("svc-admin", resource=OTHER_AUDIENCE)), "wrong audience")
    assert refused(call(stack, sign(claims(idp, iss="http://127.0.0.1:1"), key)), "wrong issuer")

    for alg in ("none", "None"):
        unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims(idp))}."
        assert refused(call(stack, unsigned), "algorithm not allowed")
    public = jwt.PyJWK({k: key[k] for k in ("kty", "n", "e")}).key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # the classic confusion: the issuer's public key as an HMAC secret
    assert refused(call(stack, hs256(claims(idp), pem, key["kid"])), "algorithm not allowed")
    no_exp = {k: v for k, v in claims(idp).items() if k != "exp"}
    assert refused(call(stack, sign(no_exp, key)), "malformed token: no 'exp' claim")
    assert refused(call(stack, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"), "signature invalid")  # no kid: the one key
    assert refused(call(stack, "eyJub3QganNvbg.e30.c2ln"), "malformed token")


def test_key_rotation_needs_no_bridge_restart(idp: OidcProvider, stack: Stack) -> None:
    before = idp.user_token("alice")
    assert call(stack, before).status_code == 200
    old, new = idp.private_key, new_key()
    idp.restart(keys=[new, old])  # the new key signs from now on; the old one is still published
    after = idp.user_token("alice")
    assert jwt.get_unverified_header(after)["kid"] == new["kid"]
    # the unknown kid makes the bridge fetch the keys again (at most once every 5 s)
    poll_for(lambda: call(stack, after).status_code == 200, 15, 0.5, "the rotated key accepted")
    assert call(stack, before).json()["name"] == "Alice Liddell"
    assert call(stack, sign(claims(idp), new)).json()["role"] == "admin"


def audit_file(stack: Stack) -> Path:
    assert stack.workdir is not None
    return stack.workdir / "state" / "isthmus" / "audit.log"  # $XDG_STATE_HOME/isthmus: no state_dir set


def audit_lines(stack: Stack) -> list[dict[str, Any]]:
    path = audit_file(stack)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def audited(stack: Stack, rids: list[str]) -> list[dict[str, Any]]:
    """The audit lines of these request ids, once all are written (the bridge writes them
    at the end of its event loop's turn, after the answer)."""
    return list(poll_for(lambda: (x := [e for e in audit_lines(stack) if e["request_id"] in rids])
                         and len(x) >= len(rids) and x, 10, what="audit lines"))


def test_browser_flow_with_refresh_and_logout(idp: OidcProvider, stack: Stack) -> None:
    """The Explorer's login without a browser: cookies, state, refresh, logout; the login and
    the logout are each one audit line naming who, and no token reaches the file."""
    before = len(audit_lines(stack))
    with httpx.Client(timeout=10) as http:
        callback = log_in(http, f"{stack.url}/auth/oidc/login", "alice", f"{stack.url}/auth/oidc/callback")
        flow = http.cookies.get("isthmus_oidc_flow")
        assert flow and flow.count(".") == 2
        query = parse_qs(urlsplit(callback).query)
        forged = http.get(callback.replace(query["state"][0], "x" * 43))
        assert forged.status_code == 400 and "not for the login this browser started" in forged.text
        done = http.get(callback)
        assert done.status_code == 302 and done.headers["location"] == "/"
        cookies = done.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("isthmus_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/" in session
        refresh = next(c for c in cookies if c.startswith("isthmus_oidc_refresh="))
        assert "HttpOnly" in refresh and "Path=/auth/oidc" in refresh
        assert http.get(f"{stack.url}/auth/whoami").json() == {"name": "Alice Liddell", "role": "user"}
        replayed = http.get(callback)
        assert replayed.status_code == 400  # the login cookie is gone: no replay

        first = http.cookies.get("isthmus_session", path="/")
        cross = http.post(f"{stack.url}/auth/oidc/refresh", headers={"origin": "http://evil.test"})
        assert cross.status_code == 403
        renewed = http.post(f"{stack.url}/auth/oidc/refresh")
        assert renewed.json() == {"name": "Alice Liddell", "role": "user"}
        assert http.cookies.get("isthmus_session", path="/") not in (None, first)

        secrets_seen = [first, http.cookies.get("isthmus_session", path="/"), query["code"][0],
                        http.cookies.get("isthmus_oidc_refresh", path="/auth/oidc")]
        logout = http.post(f"{stack.url}/auth/logout")
        assert logout.status_code == 200
        assert "isthmus_oidc_refresh" not in http.cookies and "isthmus_session" not in http.cookies
        assert http.get(f"{stack.url}/auth/whoami").status_code == 401
        again = http.post(f"{stack.url}/auth/oidc/refresh")
        assert again.status_code == 401 and "log in again" in again.text

    rids = [r.headers["x-request-id"] for r in (forged, done, replayed, cross, renewed, logout, again)]
    audited(stack, rids)
    time.sleep(0.3)  # nothing more may arrive
    lines = audit_lines(stack)[before:]
    nobody, alice = (None, None, None), ("oidc:alice", "Alice Liddell", "user")
    assert [(e["request_id"], e["action"], e["status"], (e["principal"], e["name"], e["role"])) for e in lines] == [
        (rids[0], "login", 400, nobody),  # the forged state: nobody logged in
        (rids[1], "login", 302, alice),  # the access token the provider sent, verified
        (rids[2], "login", 400, nobody),
        (rids[3], "refused", 403, nobody),
        (rids[4], "login.refresh", 200, alice),
        (rids[5], "logout", 200, alice),  # the session cookie's access token, verified
        (rids[6], "refused", 401, nobody),
    ]
    text = audit_file(stack).read_text()
    assert all(s and s not in text for s in secrets_seen), "a token or the code reached the audit log"


def test_a_logout_with_a_refused_cookie_names_nobody(idp: OidcProvider, stack: Stack) -> None:
    """The audit line never takes a JWT's word for who it is: a logout whose cookie fails
    verification names nobody and says why (and still clears the cookie)."""
    forged = sign(claims(idp, sub="alice"), new_key())  # alice's claims, a key the provider does not publish
    expired = sign(claims(idp, sub="alice", exp=int(time.time()) - 120, iat=int(time.time()) - 900),
                   idp.private_key)
    answers = [httpx.post(f"{stack.url}/auth/logout", cookies={"isthmus_session": t}, timeout=10)
               for t in (forged, expired, "ist_not-a-token")]
    assert [r.status_code for r in answers] == [200] * 3
    assert all('isthmus_session=""' in r.headers["set-cookie"] for r in answers)
    lines = audited(stack, [r.headers["x-request-id"] for r in answers])
    assert [(e["action"], e["principal"], e["name"], e["role"], e["credential"]) for e in lines] == [
        ("logout", None, None, None, "refused: signature invalid"),
        ("logout", None, None, None, "refused: token expired"),
        ("logout", None, None, None, "refused: not a valid token"),
    ]
    text = audit_file(stack).read_text()
    assert all(t not in text for t in (forged, expired, "ist_not-a-token"))


def test_unreachable_issuer_at_start(tmp_path: Any) -> None:
    idp = OidcProvider(workdir=tmp_path / "idp")  # configured, not started
    with Stack(plugins=["sysinfo"], config={"auth": {"oidc": idp.bridge_config()}}, workdir=tmp_path / "b") as s:
        assert httpx.get(f"{s.url}/edge/list", headers=s.headers).status_code == 200  # API tokens work
        token = sign(claims(idp), idp.private_key)
        down = call(s, token)
        assert down.status_code == 503
        assert down.json()["detail"] == (f"access token refused: the identity provider {idp.issuer} is "
                                         "unreachable; API tokens still work; retrying")
        login = httpx.get(f"{s.url}/auth/oidc/login")
        assert login.status_code == 503 and idp.issuer in login.text
        assert httpx.get(f"{s.url}/auth/oidc/config").json()["ready"] is False
        with idp:
            poll_for(lambda: call(s, token).status_code == 200, 20, 0.5, "JWTs accepted once the issuer is up")
            assert call(s, token).json() == {"name": "mallory", "role": "admin"}
            assert httpx.get(f"{s.url}/auth/oidc/config").json()["ready"] is True


def test_role_and_name_mapping() -> None:
    """Highest mapped role wins, dotted claims reach into objects, default_role, name fallbacks."""
    from isthmus.bridge.oidc import OidcAuth, OidcRefused
    from isthmus.config import OidcConfig
    from isthmus.types import Role

    base = {"issuer": "http://127.0.0.1:9", "client_id": "c", "audience": "a"}
    auth = OidcAuth(OidcConfig(**base, roles_claim="realm_access.roles",
                               role_map={"staff": "viewer", "ops": "admin", "dev": "user"}), tls=False)
    who = auth._principal_of({"sub": "u1", "preferred_username": "u", "realm_access": {"roles": ["dev", "ops", 3]}})
    assert (who.name, who.role, who.id) == ("u", Role.admin, "oidc:u1")
    assert auth._principal_of({"sub": "u2", "realm_access": {"roles": "staff"}}).name == "u2"
    with pytest.raises(OidcRefused) as err:
        auth._principal_of({"sub": "u3", "realm_access": ["dev"]})
    assert err.value.status == 403
    fallback = OidcAuth(OidcConfig(**base, default_role="viewer", name_claim="name"), tls=False)
    assert fallback._principal_of({"sub": "u4", "name": " Ann "}).role == Role.viewer
    assert fallback._principal_of({"sub": "u4", "name": " Ann "}).name == "Ann"
    assert OidcAuth.looks_like_jwt(sign({"sub": "x"}, new_key()))
    assert not OidcAuth.looks_like_jwt("ist_" + "x" * 40) and not OidcAuth.looks_like_jwt("eyJ" + "a." * 4)
    with pytest.raises(ValueError, match="asymmetric"):
        OidcAuth(OidcConfig(**base, algorithms=["HS256", "none"]), tls=False)


@pytest.mark.asyncio
async def test_unknown_key_ids_fetch_the_keys_at_most_once_per_interval(idp: OidcProvider) -> None:
    """Fifty forged tokens with fresh key ids, at once: one JWKS fetch, not fifty."""
    from isthmus.bridge.oidc import JWKS_MIN_INTERVAL, OidcAuth, OidcRefused
    from isthmus.config import OidcConfig

    auth = OidcAuth(OidcConfig(**idp.bridge_config()), tls=False)
    await auth.start()
    try:
        await asyncio.wait_for(_discovered(auth), 10)
        fetched: list[str] = []

        async def note(request: httpx.Request) -> None:
            fetched.append(str(request.url))

        assert auth._http is not None
        auth._http.event_hooks["request"].append(note)
        await asyncio.sleep(JWKS_MIN_INTERVAL)  # the start-up fetch is an interval ago
        forged = [sign(claims(idp), {**new_key(), "kid": f"k{i}"}) for i in range(50)]
        results = await asyncio.gather(*(auth.principal(t) for t in forged), return_exceptions=True)
        assert all(isinstance(r, OidcRefused) and r.reason == "signature invalid" for r in results)
        assert fetched == [f"{idp.url}/jwks"]
        good = sign(claims(idp), idp.private_key)
        assert (await auth.principal(good)).id == "oidc:mallory" and fetched == [f"{idp.url}/jwks"]
    finally:
        await auth.stop()


async def _discovered(auth: Any) -> None:
    while auth.provider is None:
        await asyncio.sleep(0.05)


def test_an_event_stream_ends_when_its_access_token_expires(idp: OidcProvider, stack: Stack) -> None:
    """A JWT is not in the token store, so revocation cannot end its stream: its ``exp`` does."""
    token = sign(claims(idp, exp=int(time.time()) + 3), idp.private_key)
    started = time.monotonic()
    with httpx.stream("GET", stack.url + "/events", headers={"Authorization": f"Bearer {token}"},
                      timeout=httpx.Timeout(30, read=30)) as response:
        assert response.status_code == 200
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if "event: closed" in text:
                break
    assert "access token expired" in text
    assert time.monotonic() - started < 25  # expiry (3 s) + leeway + one keep-alive interval (15 s)
