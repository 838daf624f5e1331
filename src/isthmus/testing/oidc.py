"""A real OpenID provider for tests: the npm package ``oidc-provider`` run by ``node``.

    with OidcProvider(redirect_uris=[bridge.url + "/auth/oidc/callback"]) as idp:
        token = idp.user_token("alice")            # the code flow through its login page
        token = idp.service_token("svc-user")      # client credentials

The package is installed next to ``server.mjs`` by ``make node-deps`` (``npm ci``). The
harness makes the signing keys itself (``new_key``), so a test can rotate them
(``restart(keys=[new, *old])``: the first key signs) and sign tokens of its own with a key
the provider publishes (``private_key``). Users: ``alice`` (group ``hpc-users``), ``root``
(``hpc-admins``), ``viewer`` (``hpc-viewers``), ``nobody`` (no group); service clients
``svc-<role>`` with the same groups, and ``short`` whose tokens live one second.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .stack import free_port, poll_for

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
START_TIMEOUT = 30.0
AUDIENCE = "https://isthmus.test/api"
OTHER_AUDIENCE = "https://other.test/api"  # a resource the provider also serves: tokens for it are refused
GROUPS = {"viewer": "hpc-viewers", "user": "hpc-users", "admin": "hpc-admins"}
ROLE_MAP = {group: role for role, group in GROUPS.items()}
USERS: dict[str, dict[str, Any]] = {
    "alice": {"name": "Alice Liddell", "groups": [GROUPS["user"], "physics"]},
    "root": {"name": "Root Admin", "groups": [GROUPS["admin"]]},
    "viewer": {"name": "Vera Viewer", "groups": [GROUPS["viewer"]]},
    "nobody": {"name": "No Body", "groups": []},
}
SERVICE_SECRET = "test-service-secret"
CLI_REDIRECT = "http://127.0.0.1:9/cli-callback"  # never contacted: the helper stops at the redirect


def new_key() -> dict[str, Any]:
    """A fresh RSA signing key as a private JWK with a random ``kid``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key))
    jwk.update(kid=secrets.token_hex(8), alg="RS256", use="sig")
    return jwk


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def node_missing() -> str | None:
    """Why the provider cannot start here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Debian package nodejs)"
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return f"oidc-provider is not installed: run `make node-deps` (npm ci --prefix {PROVIDER_DIR})"
    return None


class OidcProvider:
    """``oidc-provider`` on a free 127.0.0.1 port, its log in ``workdir/provider.log``."""

    def __init__(self, redirect_uris: list[str] | None = None, *, port: int | None = None,
                 keys: list[dict[str, Any]] | None = None, access_token_ttl: int = 600,
                 workdir: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.redirect_uris = list(redirect_uris or [])
        self.keys = keys or [new_key()]
        self.access_token_ttl = access_token_ttl
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = Path(workdir) if workdir else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._cookie_key = secrets.token_urlsafe(32)

    # -- what a test configures the bridge with -------------------------------------------------

    def bridge_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``auth.oidc`` section of isthmus.yaml for a bridge that trusts this provider."""
        return {"issuer": self.issuer, "client_id": "isthmus", "audience": AUDIENCE, "roles_claim": "groups",
                "role_map": dict(ROLE_MAP), "name_claim": "name", "leeway": 1,
                "scopes": ["openid", "profile", "offline_access", "api"], **overrides}

    @property
    def private_key(self) -> dict[str, Any]:
        """The private JWK that signs (published by the provider)."""
        return self.keys[0]

    # -- process ------------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        explorer = {"client_id": "isthmus", "token_endpoint_auth_method": "none",
                    "redirect_uris": self.redirect_uris or [CLI_REDIRECT],
                    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}
        cli = {**explorer, "client_id": "cli", "redirect_uris": [CLI_REDIRECT]}
        services = {f"svc-{role}": {"groups": [group]} for role, group in GROUPS.items()}
        services["svc-none"] = {"groups": []}
        services["short"] = {"groups": [GROUPS["user"]]}
        service_clients = [{"client_id": cid, "client_secret": SERVICE_SECRET, "grant_types": ["client_credentials"],
                            "response_types": [], "redirect_uris": []} for cid in services]
        return {"issuer": self.issuer, "port": self.port, "keys": self.keys, "cookie_key": self._cookie_key,
                "clients": [explorer, cli, *service_clients], "users": USERS, "services": services,
                "resources": [AUDIENCE, OTHER_AUDIENCE], "access_token_ttl": self.access_token_ttl}

    def start(self) -> OidcProvider:
        problem = node_missing()
        if problem:
            raise RuntimeError(f"cannot start the OIDC provider: {problem}")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="isthmus-oidc-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = self.workdir / "provider.json"
        fd = os.open(settings, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._settings(), fh)
        with open(self.workdir / "provider.log", "ab") as log:
            self.proc = subprocess.Popen(["node", str(PROVIDER_DIR / "server.mjs"), str(settings)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=PROVIDER_DIR, start_new_session=True)
        atexit.register(self.stop)  # its own session: a test run that dies must not leave it behind
        discovery = f"{self.url}/.well-known/openid-configuration"

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}")
            return httpx.get(discovery, timeout=1).status_code == 200

        try:
            poll_for(up, START_TIMEOUT, 0.05, "OIDC provider up")
        except (TimeoutError, RuntimeError) as exc:
            text = (self.workdir / "provider.log").read_text(errors="replace")[-4000:]
            self.stop()
            raise RuntimeError(f"the OIDC provider did not start: {exc}\n--- provider.log ---\n{text}") from exc
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        atexit.unregister(self.stop)

    def restart(self, keys: list[dict[str, Any]] | None = None) -> None:
        """Stop and start on the same port, e.g. with rotated keys (its grants are forgotten)."""
        self.stop()
        if keys is not None:
            self.keys = keys
        self.start()

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- tokens ----------------------------------------------------------------------------------------

    def service_token(self, client_id: str, resource: str = AUDIENCE) -> str:
        """A client-credentials access token (JWT); its ``sub`` is the client id."""
        r = httpx.post(f"{self.url}/token", auth=(client_id, SERVICE_SECRET), timeout=10,
                       data={"grant_type": "client_credentials", "resource": resource, "scope": "api"})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def user_token(self, user: str, resource: str = AUDIENCE) -> str:
        """An access token for ``user``: the authorization-code flow with PKCE, walked with
        httpx through the provider's own login and consent pages."""
        return str(self.code_flow(user, resource)["access_token"])

    def code_flow(self, user: str, resource: str = AUDIENCE) -> dict[str, Any]:
        """The token endpoint's whole answer (access, refresh and ID token) for ``user``."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        params = {"client_id": "cli", "response_type": "code", "redirect_uri": CLI_REDIRECT,
                  "scope": "openid profile offline_access api", "state": state, "resource": resource,
                  "code_challenge": challenge, "code_challenge_method": "S256"}
        with httpx.Client(timeout=10) as http:
            target = log_in(http, f"{self.url}/auth?{urlencode(params)}", user, CLI_REDIRECT)
            query = parse_qs(urlsplit(target).query)
            if "code" not in query or query.get("state") != [state]:
                raise RuntimeError(f"the provider refused the login: {query}")
            token = http.post(f"{self.url}/token", data={
                "grant_type": "authorization_code", "code": query["code"][0], "client_id": "cli",
                "redirect_uri": CLI_REDIRECT, "code_verifier": verifier, "resource": resource})
            token.raise_for_status()
            return dict(token.json())


def log_in(http: httpx.Client, start: str, user: str, until: str) -> str:
    """Follow ``start`` through the provider's login and consent pages as ``user`` (any
    password) until a redirect to a URL beginning with ``until``, which is returned unvisited."""
    r = http.get(start)
    for _ in range(12):
        if r.is_redirect:
            target = urljoin(str(r.url), r.headers["location"])
            if target.startswith(until):
                return target
            r = http.get(target)
            continue
        r.raise_for_status()
        action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
        prompt = re.search(r'name="prompt" value="([a-z]+)"', r.text)
        if action is None or prompt is None:
            raise RuntimeError(f"unexpected page from the provider: {r.text[:500]}")
        form = {"prompt": prompt.group(1)}
        if prompt.group(1) == "login":
            form.update(login=user, password="any password")
        r = http.post(urljoin(str(r.url), html.unescape(action.group(1))), data=form)
    raise RuntimeError(f"no redirect to {until} within 12 steps")
