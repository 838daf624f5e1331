"""The bridge's web origin: what edges, manifests and other sites may make a browser do there.

Review items: 2 (proxied answers are never pages of the bridge's site), 12 (ui_config
endpoints stay in their plugin's namespace), 20 (no CDN-loaded /api/docs), 21 (relative
redirects only), 22 (no cross-site logout/login; no credential echoed in errors).
The browser side of 2 and 12 is in tests/ui/test_ui_security.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.bridge.app import Bridge, BridgeSettings
from isthmus.bridge.auth import COOKIE_NAME, TokenStore
from isthmus.bridge.headers import PROXIED_CSP, relay_headers
from isthmus.sdk.ui import UIConfigError, endpoint_problem, invalid_endpoints, validate_ui_config
from isthmus.testing.stack import Stack
from tests.conftest import support_env

ROOT = Path(__file__).parents[2]
ADMIN = "ist_admin-token-for-web-origin-tests"

# (endpoint, allowed?) — shared with the Explorer's copy of the rules in tests/ui.
ENDPOINT_CASES: list[tuple[Any, bool]] = [
    ("version", True), ("metrics/{sid}", True), ("list_jobs/{sid}", True), ("a/b/c", True),
    ("nodes?state=down", True), ("x?next=../../a", True), ("b/a:c", True), ("...", True), ("a..b", True),
    ("job/%2e%2e.txt", True), ("café/{sid}", True),
    ("../x", False), ("../../other-edge/_edge/plugins/x/config", False), ("a/../../b", False),
    ("./x", False), ("a/.", False), ("%2e%2e/x", False), ("%2E%2e/x", False), (".%2e/x", False),
    ("%2e/x", False), ("..\\x", False), ("a\\b", False), ("..%2fx", False), ("a%2F..", False),
    ("a%5c..", False), ("/abs", False), ("//evil.example/x", False), ("http://evil.example/", False),
    ("javascript:alert(1)", False), ("a:b/c", False), (".\t./x", False), ("..\n/x", False), ("a b", False),
    ("\x00", False), ("", False), (None, False), (5, False), (["x"], False), ("x" * 600, False),
    ("{sid}/../x", False),
]


# -- item 2: the proxied-answer header policy ---------------------------------------------------------

def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for key, value in raw:
        out.setdefault(key.lower(), []).append(value)
    return out


def test_edge_headers_that_act_for_the_origin_are_dropped_and_policy_added() -> None:
    raw = [[k.encode(), v.encode()] for k, v in {
        "Content-Type": "text/html", "SET-COOKIE": f"{COOKIE_NAME}=planted", "Set-Cookie2": "a=b",
        "Content-Security-Policy": "default-src *", "Content-Security-Policy-Report-Only": "x",
        "Access-Control-Allow-Origin": "*", "access-control-allow-credentials": "true",
        "Strict-Transport-Security": "max-age=1", "Clear-Site-Data": '"*"', "Refresh": "0;url=/x",
        "Link": "</x>; rel=preload", "X-Frame-Options": "ALLOWALL", "Service-Worker-Allowed": "/",
        "WWW-Authenticate": "Basic", "Cross-Origin-Opener-Policy": "unsafe-none", "X-Mine": "kept",
        "Content-Disposition": "inline", "Cache-Control": "no-store"}.items()]
    got = _headers(relay_headers(raw, "e1"))
    for name in (b"set-cookie", b"set-cookie2", b"access-control-allow-origin", b"access-control-allow-credentials",
                 b"strict-transport-security", b"clear-site-data", b"refresh", b"link", b"service-worker-allowed",
                 b"www-authenticate", b"cross-origin-opener-policy", b"content-security-policy-report-only"):
        assert name not in got, name
    assert got[b"x-mine"] == [b"kept"] and got[b"cache-control"] == [b"no-store"]
    assert got[b"content-security-policy"] == [PROXIED_CSP] and b"sandbox" in PROXIED_CSP
    assert b"default-src 'none'" in PROXIED_CSP
    assert got[b"x-content-type-options"] == [b"nosniff"] and got[b"x-frame-options"] == [b"DENY"]
    assert got[b"content-disposition"] == [b"attachment"] and got[b"content-type"] == [b"text/html"]


@pytest.mark.parametrize(("ctype", "disposition", "want_type", "want_disposition"), [
    (b"application/json", None, b"application/json", None),
    (b"application/problem+json", None, b"application/problem+json", None),
    (b"text/plain; charset=utf-8", b"inline", b"text/plain; charset=utf-8", b"inline"),
    (b"application/octet-stream", b'attachment; filename="a.h5"', b"application/octet-stream",
     b'attachment; filename="a.h5"'),
    (b"image/png", None, b"image/png", None),
    (b"text/html", None, b"text/html", b"attachment"),
    (b"TEXT/HTML; charset=utf-8", b"inline", b"TEXT/HTML; charset=utf-8", b"attachment"),
    (b"application/xhtml+xml", None, b"application/xhtml+xml", b"attachment"),
    (b"image/svg+xml", b"inline", b"image/svg+xml", b"attachment"),
    (b"text/xml", None, b"text/xml", b"attachment"),
    (b"application/pdf", b"attachment; filename=r.pdf", b"application/pdf", b"attachment; filename=r.pdf"),
    (b"text/javascript", None, b"application/octet-stream", b"attachment"),
    (b"application/javascript; charset=utf-8", None, b"application/octet-stream", b"attachment"),
    (b"text/css", None, b"application/octet-stream", b"attachment"),
    (None, None, b"application/octet-stream", b"attachment"),
])
def test_types_inline_only_when_inert(ctype: bytes | None, disposition: bytes | None, want_type: bytes,
                                      want_disposition: bytes | None) -> None:
    raw = [[b"content-length", b"3"]]
    if ctype is not None:
        raw.append([b"content-type", ctype])
    if disposition is not None:
        raw.append([b"content-disposition", disposition])
    got = _headers(relay_headers(raw, "e1"))
    assert got[b"content-type"] == [want_type]
    assert got.get(b"content-disposition") == ([want_disposition] if want_disposition else None)
    assert got[b"content-security-policy"] == [PROXIED_CSP]


def test_two_content_types_are_not_guessed_between() -> None:
    got = _headers(relay_headers([[b"content-type", b"application/json"], [b"content-type", b"text/html"]], "e"))
    assert got[b"content-type"] == [b"application/octet-stream"]
    assert got[b"content-disposition"] == [b"attachment"]


@pytest.mark.parametrize(("location", "want"), [
    (b"/probe/x?a=1", b"/e1/probe/x?a=1"),
    (b"/../victim/x", None), (b"/probe/%2e%2e/%2e%2e/victim", None), (b"//evil.example/x", None),
    (b"/\\evil.example", None), (b"https://evil.example/", None), (b"probe/x", None), (b"/", None),
    (b"/p/\xff", None),
])
def test_redirects_stay_on_their_edge(location: bytes, want: bytes | None) -> None:
    got = _headers(relay_headers([[b"location", location], [b"content-type", b"application/json"]], "e1"))
    assert got.get(b"location") == ([want] if want else None)


def test_malformed_headers_are_an_error_not_a_pass_through() -> None:
    for bad in ([["set-cookie", b"x"]], [[b"a"]], 5, {b"ab": b"c"}):
        with pytest.raises((ValueError, TypeError)):
            relay_headers(bad, "e")


@pytest.fixture(scope="module")
def hostile_stack() -> Iterator[Stack]:
    with Stack(plugins=["hostile_plugins:PluginHostile"], env=support_env()) as stack:
        yield stack


def test_hostile_edge_answers_reach_clients_defanged(hostile_stack: Stack) -> None:
    with hostile_stack.http() as http:
        for path in ("/test/hostile/page", "/test/hostile/big"):  # inline and streamed answers
            resp = http.get(path)
            assert resp.status_code == 200 and b"<script>" in resp.content  # the bytes are intact
            assert "set-cookie" not in resp.headers and "refresh" not in resp.headers
            assert "clear-site-data" not in resp.headers and "link" not in resp.headers
            assert not [k for k in resp.headers if k.startswith("access-control-")]
            assert resp.headers["content-security-policy"] == PROXIED_CSP.decode()
            assert resp.headers["content-disposition"] == "attachment"
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["x-frame-options"] == "DENY"
            assert resp.headers["x-edge-own"] == "kept"
            assert not http.cookies
        js = http.get("/test/hostile/evil.js")
        assert js.headers["content-type"] == "application/octet-stream"
        data = http.get("/test/hostile/data")
        assert data.json() == {"plain": "data"} and data.headers["content-disposition"] == "inline"  # inert
        assert "set-cookie" not in data.headers
        moved = http.get("/test/hostile/redirect", params={"to": "/hostile/data"})
        assert moved.status_code == 307 and moved.headers["location"] == "/test/hostile/data"
        for escape in ("/../victim/recorder/hit", "//evil.example/", "https://evil.example/"):
            moved = http.get("/test/hostile/redirect", params={"to": escape})
            assert moved.status_code == 307 and "location" not in moved.headers, escape


NAVIGATION = re.compile(r"\b(?:window\.open|location\s*\.\s*(?:assign|replace|href\s*=)|location\s*=(?!=)"
                        r"|\.download\s*=|top\.location|document\.location)")


def test_the_explorer_never_navigates_the_top_window() -> None:
    """Item 2: a proxied URL is never opened as a page; links are hash routes only."""
    static = ROOT / "src/isthmus/bridge/explorer/static"
    files = [*sorted(static.glob("*.js")), *sorted(static.glob("pages/*.js")),
             *sorted((ROOT / "src/isthmus/plugins").glob("*/ui.js"))]
    assert len(files) > 5
    for path in files:
        text = path.read_text()
        assert not NAVIGATION.findall(text), f"{path}: {NAVIGATION.findall(text)}"
        hash_bases = set(re.findall(r"const (\w+) = [`'\"]#", text))  # e.g. const base = `#/...`
        for href in re.findall(r"href:\s*([^,}]+)", text):
            expr = href.strip()
            first = re.split(r"[\s(.?]", expr, maxsplit=1)[0]
            assert (first in ("pluginHref", "menuHref", "PAGES") or expr[:2] in ("'#", "`#")
                    or (expr.startswith("v === ") and hash_bases)
                    or (expr == "url" and "URL.createObjectURL(" in text)), f"{path}: href {href}"
        for blob in re.findall(r"href:\s*url,\s*([^}]*)", text):  # a download made in the page
            assert "download:" in blob, f"{path}: a blob link without download"


# -- item 12: ui_config endpoints ----------------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "allowed"), ENDPOINT_CASES)
def test_endpoint_rules(endpoint: Any, allowed: bool) -> None:
    assert (endpoint_problem(endpoint) is None) == allowed, endpoint_problem(endpoint)


def test_invalid_endpoints_names_the_plugin_and_every_place() -> None:
    manifest = {"ui_config": {
        "forms": [{"id": "cfg", "submit": {"endpoint": "../../other-edge/_edge/plugins/x/config", "method": "PUT"}},
                  {"id": "../../other/x"},
                  {"id": "ok", "fields": [{"name": "f", "options_endpoint": "%2e%2e/x"}]}],
        "monitors": [{"id": "m", "endpoint": "//evil.example/x"}, {"id": "fine", "endpoint": "status/{sid}"}]}}
    problems = invalid_endpoints("sneaky", manifest)
    assert len(problems) == 4 and all(p.startswith("plugin 'sneaky':") for p in problems)
    assert "form 'cfg' submit.endpoint" in problems[0]
    assert "default endpoint" in problems[1]
    assert "options_endpoint" in problems[2] and "monitor 'm'" in problems[3]


def test_invalid_endpoints_is_quiet_on_good_manifests() -> None:
    from isthmus.sdk.registry import entry_points

    for name, ep in entry_points().items():
        if ep.module.startswith("isthmus.plugins."):
            cls = ep.load()
            ui = validate_ui_config(cls.ui_config, name)
            assert invalid_endpoints(name, {"ui_config": ui, "title": "x"}) == [], name
    assert invalid_endpoints("p", {}) == [] and invalid_endpoints("p", {"ui_config": None}) == []


@pytest.mark.parametrize("manifest", [
    None, [], "x", 5, {"ui_config": []}, {"ui_config": "x"}, {"ui_config": {"forms": "x"}},
    {"ui_config": {"forms": [None, 1, "a", {"id": 5}, {"submit": []}, {"fields": {"a": 1}}]}},
    {"ui_config": {"monitors": [None, {"endpoint": {"a": 1}}, {"id": [], "endpoint": b"x"}]}},
    {"ui_config": {"forms": [{"id": "f", "fields": [None, {"options_endpoint": 7}]}]}},
])
def test_invalid_endpoints_is_total(manifest: Any) -> None:
    problems = invalid_endpoints("p", manifest)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                           st.sampled_from(["ui_config", "forms", "monitors", "fields", "submit", "endpoint",
                                            "options_endpoint", "id", "name", "x"]), inner, max_size=5),
                       max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(plugin=st.none() | st.text(max_size=5) | st.integers(), manifest=JSONISH)
def test_invalid_endpoints_never_raises(plugin: Any, manifest: Any) -> None:
    problems = invalid_endpoints(plugin, manifest)
    assert isinstance(problems, list) and len(problems) <= 21


def test_many_problems_are_capped() -> None:
    manifest = {"ui_config": {"monitors": [{"id": str(i), "endpoint": "../x"} for i in range(10_000)]}}
    assert len(invalid_endpoints("p", manifest)) == 21


def test_the_edge_refuses_a_plugin_with_a_bad_endpoint(tmp_path: Path) -> None:
    """12(a): a plugin error at load, naming the plugin; its manifest carries no ui_config."""
    from isthmus.config import AppConfig
    from isthmus.runtime.host import PluginHost

    with pytest.raises(UIConfigError, match=r"plugin 'p'.*'\.\./x'"):
        validate_ui_config({"monitors": [{"id": "m", "endpoint": "../x"}]}, "p")
    host = PluginHost(AppConfig(state_dir=tmp_path / "state"), ["hostile_plugins:PluginBadEndpoint"], name="t")
    host.load()
    (record,) = host.records.values()
    assert record.plugin is None and record.error is not None
    assert "plugin 'badendpoint'" in record.error and "'..' segment" in record.error
    (manifest,) = host.manifests().values()
    assert manifest["error"] == record.error and not manifest.get("ui_config")


def test_a_plugin_whose_ui_config_goes_bad_later_is_reported(tmp_path: Path) -> None:
    from isthmus.config import AppConfig
    from isthmus.runtime.host import PluginHost

    host = PluginHost(AppConfig(state_dir=tmp_path / "state"), ["testplugins:PluginEvil"], name="t")
    host.load()
    plugin = host.records["evil"].plugin
    assert plugin is not None
    plugin._ui = {"monitors": [{"id": "m", "endpoint": "%2e%2e/%2e%2e/other/x"}]}
    manifest = host.manifests()["evil"]
    assert "plugin 'evil'" in manifest["error"] and not manifest.get("ui_config")


# -- items 20, 21, 22: the bridge's own routes, in process ------------------------------------------

def _call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    bridge = Bridge(BridgeSettings(), TokenStore(None, admin_token=ADMIN))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=bridge)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_no_swagger_ui_from_a_cdn() -> None:
    """20: /api/docs is gone (no installed Swagger UI); the OpenAPI document stays."""
    assert _call("GET", "/api/docs", headers=AUTH).status_code == 404
    assert _call("GET", "/docs/oauth2-redirect", headers=AUTH).status_code != 200
    spec = _call("GET", "/api/openapi.json", headers=AUTH)
    assert spec.status_code == 200 and "/auth/login" in spec.json()["paths"]
    assert "cdn" not in spec.text.lower()
    login = spec.json()["paths"]["/auth/login"]["post"]
    assert "token" in str(login["requestBody"])


@pytest.mark.parametrize("path", ["/static", "//static", "/static/."])
def test_directory_redirects_are_relative(path: str) -> None:
    """21: the Host header never picks where a redirect goes."""
    resp = _call("GET", path, headers={"Host": "evil.example"})
    if resp.status_code in (301, 302, 303, 307, 308):
        location = resp.headers["location"]
        assert location.startswith("/") and not location.startswith("//"), location
        assert "evil.example" not in location
    else:
        assert resp.status_code in (200, 404)


def test_static_redirect_goes_to_the_explorer() -> None:
    resp = _call("GET", "/static", headers={"Host": "evil.example"})
    assert resp.status_code == 307 and resp.headers["location"] == "/static/"


CROSS_SITE = [
    {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://attacker.example"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "null"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_cross_site_logout_is_refused(headers: dict[str, str]) -> None:
    """22: another site cannot log a browser out (or in)."""
    cookie = {"Cookie": f"{COOKIE_NAME}={ADMIN}"}
    resp = _call("POST", "/auth/logout", headers={**headers, **cookie})
    assert resp.status_code == 403 and "set-cookie" not in resp.headers
    resp = _call("POST", "/auth/login", headers=headers, json={"token": ADMIN})
    assert resp.status_code == 403 and "set-cookie" not in resp.headers


def test_same_origin_logout_and_login_work() -> None:
    same = {"Origin": "http://bridge.test", "Sec-Fetch-Site": "same-origin"}
    resp = _call("POST", "/auth/logout", headers=same)
    assert resp.status_code == 200 and f'{COOKIE_NAME}=""' in resp.headers["set-cookie"]
    assert _call("POST", "/auth/logout").status_code == 200  # a non-browser client
    resp = _call("POST", "/auth/login", headers=same, json={"token": ADMIN})
    assert resp.status_code == 200 and resp.json()["role"] == "admin"
    assert "httponly" in resp.headers["set-cookie"].lower()


SECRET = "ist_THIS-IS-A-SECRET-TOKEN-VALUE"


@pytest.mark.parametrize("kwargs", [
    {"json": {"token": [SECRET]}}, {"json": {"token": {"t": SECRET}}}, {"json": {"tok": SECRET}},
    {"json": [SECRET]}, {"json": SECRET}, {"data": {"token": SECRET}},
    {"content": f'{{"token": "{SECRET}"', "headers": {"content-type": "application/json"}},
    {"content": SECRET}, {"json": {"token": SECRET}},
])
def test_login_errors_never_echo_the_token(kwargs: dict[str, Any]) -> None:
    resp = _call("POST", "/auth/login", **kwargs)
    assert resp.status_code in (401, 422)
    assert "SECRET" not in resp.text and "input" not in resp.text
