"""OpenID Connect: bearer access tokens (JWT) from one issuer, and the Explorer's login.

Bearer tokens: the signature is checked with the issuer's published keys (JWKS, fetched at
start and every ``JWKS_REFRESH``; a token signed with an unknown ``kid`` triggers a refetch,
at most once every ``JWKS_MIN_INTERVAL`` so forged tokens cannot make the bridge hammer the
issuer), then ``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` with the configured leeway. A
verified token is cached by its digest until it expires, so a JWT costs one dict lookup per
request after its first. The principal's id is ``oidc:<sub>``: jobs, files and sessions
belong to it, as they belong to a token's id.

The browser flow keeps the bridge the OIDC client (backend for frontend): the page never
sees a token. ``/auth/oidc/login`` keeps state, nonce and the PKCE verifier in a short-lived
cookie (nothing in the bridge's memory per visitor), ``/auth/oidc/callback`` exchanges the
code and sets the session cookie to the access token, ``/auth/oidc/refresh`` renews it with
the refresh token, which only ``/auth/oidc/...`` ever receives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ..config import OidcConfig
from ..types import Principal, Role
from .auth import COOKIE_NAME, same_origin

log = logging.getLogger("isthmus.bridge.oidc")

PREFIX = "/auth/oidc"
FLOW_COOKIE = "isthmus_oidc_flow"  # state.nonce.verifier of a login in progress (path /auth/oidc)
REFRESH_COOKIE = "isthmus_oidc_refresh"  # the refresh token (path /auth/oidc)
FLOW_TTL = 600  # seconds a login may take at the identity provider
SESSION_MAX = 12 * 3600  # the session cookie never outlives this (nor the access token)
REFRESH_MAX = 30 * 86400
COOKIE_MAX = 4000  # browsers drop cookies over 4 KiB
MAX_TOKEN = 16384  # longer bearer values are not JWTs we verify
CACHE_SIZE = 20000  # verified tokens remembered (LRU), ~0.5 KB each
JWKS_MIN_INTERVAL = 5.0  # seconds between key-set fetches asked for by unknown key ids
JWKS_REFRESH = 600.0  # seconds between routine key-set fetches (retired keys go)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # back-off while the issuer is unreachable
WAKE_MIN = 2.0  # a request for an undiscovered issuer retries discovery, at most this often
HTTP_TIMEOUT = 10.0
TOKEN_CALLS = 16  # code and refresh trades open at the identity provider at once; more: 503
MAX_DOCUMENT = 256 * 1024  # discovery, JWKS and token answers
NEVER = frozenset({"none", "HS256", "HS384", "HS512"})
_FLOW_PART = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")

REFUSALS = {  # PyJWT's errors → the check that failed (never the key)
    jwt.ExpiredSignatureError: "token expired",
    jwt.ImmatureSignatureError: "token not yet valid",
    jwt.InvalidAudienceError: "wrong audience",
    jwt.InvalidIssuerError: "wrong issuer",
    jwt.InvalidSignatureError: "signature invalid",
    jwt.InvalidAlgorithmError: "algorithm not allowed",
}


class OidcRefused(Exception):
    """A JWT refused: ``status`` 401 (``reason`` names the check), 403 (no role) or 503
    (the issuer is unreachable)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Provider:
    """What discovery told us about the issuer."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claim(claims: dict[str, Any], path: str) -> Any:
    """``claims[path]``, following dots into objects (``realm_access.roles``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _header(token: str) -> dict[str, Any]:
    """A JWS's header, read here (PyJWT's decode checks it again: reading it through PyJWT
    as well doubles the cost of a first verification)."""
    segment = token.partition(".")[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise OidcRefused(401, "malformed token") from None
    if not isinstance(header, dict):
        raise OidcRefused(401, "malformed token")
    return header


class OidcAuth:
    """Verifies access tokens of ``config.issuer`` and serves the browser login (module docstring)."""

    def __init__(self, config: OidcConfig, *, tls: bool) -> None:
        self.config = config
        # cookies are Secure when browsers reach the bridge over TLS: its own, or a proxy's in front
        # of it (an https redirect_url says so)
        self.tls = tls or (config.redirect_url or "").startswith("https://")
        self._token_slots = asyncio.Semaphore(TOKEN_CALLS)
        self.issuer = config.issuer.rstrip("/")
        self.algorithms = [a for a in config.algorithms if a not in NEVER]
        if not self.algorithms:
            raise ValueError("auth.oidc.algorithms allows none of the asymmetric algorithms; use e.g. RS256")
        self.label = config.label or (urlsplit(config.issuer).hostname or config.issuer)
        self.secret = self._read_secret()
        self.public_paths = frozenset(f"{PREFIX}/{p}" for p in ("config", "login", "callback", "refresh"))
        self.provider: Provider | None = None
        self._keys: dict[str, jwt.PyJWK] = {}  # kid ("" when none) → key
        self._keys_at = -JWKS_MIN_INTERVAL  # monotonic time of the last key-set fetch
        self._keys_lock = asyncio.Lock()
        self._cache: OrderedDict[bytes, tuple[Principal, float, str]] = OrderedDict()  # digest → (who, exp, kid)
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def _read_secret(self) -> str | None:
        path = self.config.client_secret_file
        if path is None:
            return None
        path = path.expanduser()
        try:
            if path.stat().st_mode & 0o077:
                raise ValueError(f"{path} (auth.oidc.client_secret_file) is readable by others: chmod 600 it")
            return path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read auth.oidc.client_secret_file {path}: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Discover the issuer in the background: an unreachable one never stops the bridge."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)
        if self._task is None:
            self._task = asyncio.create_task(self._discover_forever(), name="oidc-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _discover_forever(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                if self.provider is None:
                    await self._discover()
                    log.info("OIDC: discovered %s (%d signing keys)", self.issuer, len(self._keys))
                    delay = RETRY_FIRST
                else:
                    await self._fetch_keys()
            except Exception as exc:  # noqa: BLE001 - keep retrying whatever the issuer answers
                log.warning("OIDC: %s: %s; retrying in %g s", self.issuer, exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            await self._sleep(JWKS_REFRESH)

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a request finds the issuer undiscovered (``_wake``),
        but then still ``WAKE_MIN`` at least, so requests cannot make the bridge hammer it."""
        self._wake.clear()
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        rest = min(seconds, WAKE_MIN) - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    async def _get_json(self, url: str) -> dict[str, Any]:
        http = self._require_http()
        async with http.stream("GET", url, headers={"accept": "application/json"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"GET {url} answered {r.status_code}")
            return self._json(await self._read(r), url)

    @staticmethod
    async def _read(r: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in r.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT:
                raise RuntimeError(f"{r.request.url} answered more than {MAX_DOCUMENT} bytes")
        return bytes(body)

    @staticmethod
    def _json(body: bytes, url: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise RuntimeError(f"{url} did not answer a JSON object")
        return data

    def _require_http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("OIDC is not started")
        return self._http

    async def _discover(self) -> None:
        meta = await self._get_json(self.issuer + "/.well-known/openid-configuration")
        if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
            raise RuntimeError(f"discovery names issuer {meta.get('issuer')!r}, not {self.issuer!r} "
                               "(set auth.oidc.issuer to exactly the issuer's URL)")
        urls = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = meta.get(name)
            if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
                raise RuntimeError(f"discovery has no usable {name}")
            urls[name] = value
        provider = Provider(str(meta["issuer"]), **urls)
        await self._fetch_keys(provider)
        self.provider = provider

    async def _fetch_keys(self, provider: Provider | None = None) -> None:
        provider = provider or self.provider
        if provider is None:
            raise RuntimeError("the issuer is not discovered yet")
        self._keys_at = time.monotonic()
        data = await self._get_json(provider.jwks_uri)
        keys: dict[str, jwt.PyJWK] = {}
        for entry in data.get("keys") or []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, KeyError, TypeError, ValueError):
                continue  # a key type or algorithm we do not use, or a damaged entry
            keys[str(entry.get("kid") or "")] = key
        if not keys:
            raise RuntimeError(f"{provider.jwks_uri} publishes no usable signing key")
        self._keys = keys
        for digest_, (_, _, kid) in list(self._cache.items()):  # tokens of retired keys go
            if kid not in keys:
                del self._cache[digest_]

    # -- bearer tokens ---------------------------------------------------------------------------------

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        """A JWS in compact form (API tokens start with ``ist_`` and never match)."""
        return len(token) <= MAX_TOKEN and token.startswith("eyJ") and token.count(".") == 2

    def unreachable(self) -> OidcRefused:
        return OidcRefused(503, f"the identity provider {self.issuer} is unreachable; API tokens still work; "
                                "retrying")

    async def principal(self, token: str) -> Principal:
        """The verified principal of an access token, or ``OidcRefused`` naming the failed check."""
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key)
        if hit is not None:
            if time.time() <= hit[1] + self.config.leeway:
                self._cache.move_to_end(key)
                return hit[0]
            del self._cache[key]
            raise OidcRefused(401, "token expired")
        claims, kid = await self.verify(token, audience=self.config.audience)
        principal = self._principal_of(claims)
        self._cache[key] = (principal, float(claims["exp"]), kid)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def expires(self, token: str) -> float | None:
        """When a token ``principal`` accepted stops being valid (epoch seconds, leeway included)."""
        hit = self._cache.get(hashlib.sha256(token.encode()).digest())
        return hit[1] + self.config.leeway if hit is not None else None

    async def verify(self, token: str, *, audience: str) -> tuple[dict[str, Any], str]:
        """(claims, kid) of a token signed by the issuer for ``audience``."""
        provider = self.provider
        if provider is None:
            self._wake.set()  # retry discovery now (at most every WAKE_MIN seconds)
            raise self.unreachable()
        header = _header(token)
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise OidcRefused(401, "algorithm not allowed")
        kid = str(header.get("kid") or "")
        signing_key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, signing_key.key, algorithms=[alg], audience=audience, issuer=provider.issuer,
                leeway=self.config.leeway, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.MissingRequiredClaimError as exc:
            raise OidcRefused(401, f"malformed token: no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise OidcRefused(401, next((r for t, r in REFUSALS.items() if isinstance(exc, t)),
                                        "malformed token")) from None
        except (TypeError, ValueError):  # a key of another type than the algorithm's
            raise OidcRefused(401, "signature invalid") from None
        if not isinstance(claims.get("sub"), str) or not 0 < len(claims["sub"]) <= 255:
            raise OidcRefused(401, "malformed token: 'sub' must be a string of 1 to 255 characters")
        return claims, kid

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None and not kid and len(self._keys) == 1:
            key = next(iter(self._keys.values()))  # no kid: an issuer with one key
        if key is not None:
            return key
        async with self._keys_lock:  # one fetch for all the requests that wait here
            key = self._keys.get(kid)
            if key is None and time.monotonic() - self._keys_at >= JWKS_MIN_INTERVAL:
                try:
                    await self._fetch_keys()
                except Exception as exc:  # noqa: BLE001 - the issuer's failure is one answer: 503
                    log.warning("OIDC: fetching the keys of %s failed: %s", self.issuer, exc)
                    raise self.unreachable() from None
                key = self._keys.get(kid)
        if key is None:
            raise OidcRefused(401, "signature invalid")
        return key

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        value = _claim(claims, self.config.roles_claim)
        groups = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        role_map = self.config.role_map
        roles = [Role.parse(role_map[g]) for g in groups if isinstance(g, str) and g in role_map]
        if roles:
            role = max(roles)
        elif self.config.default_role is not None:
            role = Role.parse(self.config.default_role)
        else:
            raise OidcRefused(403, f"no Isthmus role: the token's {self.config.roles_claim!r} claim maps to none "
                                   "in auth.oidc.role_map; ask an administrator for access")
        name = next((n.strip() for n in (_claim(claims, self.config.name_claim), claims.get("preferred_username"))
                     if isinstance(n, str) and n.strip()), claims["sub"])
        return Principal(name[:128], role, "oidc:" + claims["sub"])

    # -- the browser's login -------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(prefix=PREFIX)

        @router.get("/config")
        async def config() -> dict[str, Any]:
            """Whether the Explorer shows "Log in with …" (and whether the issuer answers yet)."""
            return {"enabled": True, "issuer": self.issuer, "label": self.label, "ready": self.provider is not None}

        @router.get("/login")
        async def login(request: Request) -> Response:
            """Start the authorization-code flow with PKCE at the identity provider."""
            provider = self._provider()
            state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
            challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
            url = httpx.URL(provider.authorization_endpoint).copy_merge_params({
                "response_type": "code", "client_id": self.config.client_id,
                "redirect_uri": self._redirect_uri(request), "scope": " ".join(self.config.scopes),
                "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
                "resource": self.config.audience})
            response = RedirectResponse(str(url), status_code=302, headers={"cache-control": "no-store"})
            response.set_cookie(FLOW_COOKIE, f"{state}.{nonce}.{verifier}", max_age=FLOW_TTL, path=PREFIX,
                                httponly=True, samesite="lax", secure=self.tls)
            return response

        @router.get("/callback")
        async def callback(request: Request, code: str | None = Query(None, max_length=2048),
                           state: str | None = Query(None, max_length=256),
                           iss: str | None = Query(None, max_length=1024),
                           error: str | None = Query(None, max_length=256),
                           error_description: str | None = Query(None, max_length=1024)) -> Response:
            """The identity provider sends the browser back here with a code: trade it for tokens."""
            flow = self._flow(request.cookies.get(FLOW_COOKIE))
            if error is not None:
                raise HTTPException(401, f"the identity provider refused the login: {error}"
                                         + (f" ({error_description[:200]})" if error_description else ""))
            if flow is None:
                raise HTTPException(400, "no login is in progress in this browser (it takes at most "
                                         f"{FLOW_TTL // 60} minutes, and needs cookies); start again from the Explorer")
            expected_state, nonce, verifier = flow
            if state is None or not hmac.compare_digest(state, expected_state):
                raise HTTPException(400, "this answer is not for the login this browser started; start again")
            provider = self._provider()
            if iss is not None and iss.rstrip("/") != self.issuer:
                raise HTTPException(400, "the answer comes from another issuer than auth.oidc.issuer")
            if not code:
                raise HTTPException(400, "the identity provider sent no code")
            tokens = await self._token_request(provider, {
                "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": self._redirect_uri(request)})
            principal = await self._session_principal(tokens)
            await self._check_id_token(tokens.get("id_token"), nonce, principal)
            request.state.principal = principal  # for the audit line (bridge/exchange.py)
            response = RedirectResponse("/", status_code=302, headers={"cache-control": "no-store"})
            self._set_cookies(response, tokens)
            response.delete_cookie(FLOW_COOKIE, path=PREFIX, httponly=True, samesite="lax", secure=self.tls)
            return response

        @router.post("/refresh")
        async def refresh(request: Request) -> Response:
            """A new session cookie from the refresh cookie; 401 means: log in again."""
            if not same_origin(request.scope["headers"]):
                raise HTTPException(403, "cross-site request refused")
            token = request.cookies.get(REFRESH_COOKIE)
            if not token or len(token) > MAX_TOKEN:
                raise HTTPException(401, "no refresh token in this browser: log in again")
            provider = self._provider()
            try:
                tokens = await self._token_request(provider, {"grant_type": "refresh_token", "refresh_token": token})
            except HTTPException as exc:
                if exc.status_code != 401:
                    raise
                response = JSONResponse({"detail": exc.detail}, status_code=401)
                response.delete_cookie(REFRESH_COOKIE, path=PREFIX, httponly=True, samesite="strict",
                                       secure=self.tls)
                return response
            principal = await self._session_principal(tokens)
            request.state.principal = principal  # for the audit line
            response = JSONResponse({"name": principal.name, "role": principal.role.name})
            self._set_cookies(response, tokens)
            return response

        return router

    def _provider(self) -> Provider:
        if self.provider is None:
            self._wake.set()
            raise HTTPException(503, self.unreachable().reason.replace("API tokens still work",
                                                                       "log in with a token meanwhile"))
        return self.provider

    def _redirect_uri(self, request: Request) -> str:
        """``auth.oidc.redirect_url``, else this bridge's callback as the browser addressed it
        (the identity provider only accepts the URIs registered for the client)."""
        if self.config.redirect_url:
            return self.config.redirect_url
        host = request.headers.get("host", "")
        if not _HOST.match(host):
            raise HTTPException(400, "cannot tell this bridge's address: set auth.oidc.redirect_url")
        return f"{'https' if self.tls else 'http'}://{host}{PREFIX}/callback"

    @staticmethod
    def _flow(cookie: str | None) -> tuple[str, str, str] | None:
        parts = (cookie or "").split(".")
        if len(parts) != 3 or not all(_FLOW_PART.match(p) for p in parts):
            return None
        return parts[0], parts[1], parts[2]

    async def _token_request(self, provider: Provider, form: dict[str, str]) -> dict[str, Any]:
        """POST to the token endpoint as this client; 401 when the provider refuses the grant."""
        form = {**form, "client_id": self.config.client_id, "resource": self.config.audience}
        auth = (self.config.client_id, self.secret) if self.secret is not None else None
        if self._token_slots.locked():  # a flood of junk codes must not starve key fetches or the provider
            raise HTTPException(503, "too many logins are being completed at once; try again in a moment",
                                headers={"retry-after": "1"})
        try:
            async with self._token_slots, self._require_http().stream(
                    "POST", provider.token_endpoint, data=form, auth=auth,
                    headers={"accept": "application/json"}) as r:
                body = await self._read(r)
        except (httpx.HTTPError, RuntimeError) as exc:
            log.warning("OIDC: the token endpoint of %s failed: %s", self.issuer, exc)
            raise HTTPException(503, f"the identity provider {self.issuer} is unreachable; try again") from None
        try:
            data = self._json(body, provider.token_endpoint)
        except RuntimeError:
            raise HTTPException(502, "the identity provider's token endpoint did not answer JSON") from None
        if r.status_code != 200:
            error = str(data.get("error", r.status_code))[:100]
            status = 401 if r.status_code in (400, 401) else 502
            raise HTTPException(status, f"the identity provider refused: {error}; log in again")
        if not isinstance(data.get("access_token"), str):
            raise HTTPException(502, "the identity provider's answer has no access token")
        return data

    async def _check_id_token(self, id_token: Any, nonce: str, principal: Principal) -> None:
        """The ID token must be the issuer's, for this client, with this login's nonce and the
        access token's subject."""
        if id_token is None:
            return  # no openid scope: the access token alone says who logged in
        try:
            claims, _ = await self.verify(str(id_token), audience=self.config.client_id)
        except OidcRefused as exc:
            raise HTTPException(exc.status, f"the ID token was refused: {exc.reason}") from None
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise HTTPException(401, "the ID token's nonce is not this login's; start again")
        if "oidc:" + claims["sub"] != principal.id:
            raise HTTPException(401, "the ID token and the access token name different users")

    async def _session_principal(self, tokens: dict[str, Any]) -> Principal:
        """The access token of a token answer, verified like a bearer one."""
        try:
            return await self.principal(tokens["access_token"])
        except OidcRefused as exc:
            raise HTTPException(exc.status, f"the identity provider's access token was refused: {exc.reason}") \
                from None

    def _set_cookies(self, response: Response, tokens: dict[str, Any]) -> None:
        """The session cookie (the access token, until it expires) and the refresh cookie."""
        access: str = tokens["access_token"]
        if len(access) > COOKIE_MAX:
            raise HTTPException(502, f"the access token has {len(access)} bytes, more than a browser cookie holds; "
                                     "configure the identity provider to put fewer claims in it")
        hit = self._cache.get(hashlib.sha256(access.encode()).digest())
        lifetime = int(hit[1] - time.time()) if hit is not None else SESSION_MAX
        response.set_cookie(COOKIE_NAME, access, max_age=max(1, min(lifetime, SESSION_MAX)), path="/",
                            httponly=True, samesite="strict", secure=self.tls)
        refresh = tokens.get("refresh_token")
        if isinstance(refresh, str) and len(refresh) <= COOKIE_MAX:
            expires = tokens.get("refresh_expires_in")
            max_age = expires if isinstance(expires, int) and expires > 0 else REFRESH_MAX
            response.set_cookie(REFRESH_COOKIE, refresh, max_age=min(max_age, REFRESH_MAX), path=PREFIX,
                                httponly=True, samesite="strict", secure=self.tls)
