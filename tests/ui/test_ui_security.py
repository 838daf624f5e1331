"""A hostile edge against a logged-in admin, in real chromium (review items 2 and 12).

Edge ``test`` plays the attacker (hostile_plugins: PluginHostile answers HTML, SVG and
JavaScript with cookies; PluginSneaky hands out session ids that are paths, and the
browser is shown ui_config endpoints that climb out with ``..``); edge ``victim`` hosts a
recorder that remembers every request reaching it; edge ``liar`` announces such endpoints
to the real bridge.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hostile_plugins import ESCAPES, HOSTILE_UI  # tests/support is on sys.path (tests/conftest.py)
from playwright.sync_api import Error as PlaywrightError

from isthmus.testing.stack import Stack, poll_for
from tests.conftest import support_env
from tests.security.test_web_origin import ENDPOINT_CASES
from tests.ui.conftest import login, shot

pytestmark = pytest.mark.ui
COOKIE = "isthmus_session"


def _edge(s: Stack, name: str, plugin: str, state: Path) -> subprocess.Popen[bytes]:
    """One more edge process on the stack's bridge; its log is ``state/edge.log``."""
    env = {**os.environ, **support_env(), "ISTHMUS_EDGE_TOKEN": s.edge_token, "XDG_STATE_HOME": str(state),
           "XDG_CONFIG_HOME": str(state / "config")}
    with open(state / "edge.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge", f"ws://127.0.0.1:{s.port}",
                                 "--name", name, "--plugins", plugin], env=env, stdout=log, stderr=log)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Bridge + hostile edge ``test`` + victim edge ``victim``."""
    with Stack(plugins=["sysinfo", "hostile_plugins:PluginHostile", "hostile_plugins:PluginSneaky"],
               env=support_env()) as s:
        victim = _edge(s, "victim", "hostile_plugins:PluginRecorder", tmp_path_factory.mktemp("victim"))
        try:
            poll_for(lambda: "victim" in httpx.get(f"{s.url}/edge/list", headers=s.headers).json()["edges"], 30,
                     what="victim edge")
            yield s
        finally:
            victim.send_signal(signal.SIGTERM)
            victim.wait(15)


def _admin(s: Stack) -> dict[str, str]:
    return {"url": s.url, "token": s.admin_token}


def _session_cookie(page: Any) -> str | None:
    return next((c["value"] for c in page.context.cookies() if c["name"] == COOKIE), None)


def _stolen(s: Stack) -> list[str]:
    return httpx.get(f"{s.url}/test/hostile/stolen", headers=s.headers).json()["stolen"]


def _victim_hits(s: Stack) -> list[str]:
    return httpx.get(f"{s.url}/victim/recorder/hits", headers=s.headers).json()["hits"]


def _open_top(page: Any, url: str) -> bool:
    """Navigate the top window to ``url``; True if the browser downloaded it instead of showing it."""
    try:
        with page.expect_download(timeout=5000) as info:
            try:
                page.goto(url)
            except PlaywrightError as exc:  # chromium aborts a navigation that turned into a download
                if "Download is starting" not in str(exc) and "ERR_ABORTED" not in str(exc):
                    raise
        info.value.cancel()
        return True
    except PlaywrightError:
        return False


def test_proxied_html_svg_and_script_never_run_as_the_bridge(page, stacks: Stack) -> None:
    """Item 2: an edge's HTML/SVG/JS runs nowhere with the admin's session, and sets no cookie."""
    login(page, _admin(stacks))
    cookie = _session_cookie(page)
    assert cookie == stacks.admin_token
    # 1. the admin opens proxied URLs in the top window (a link, a bookmark, a typed URL)
    for path in ("/test/hostile/page", "/test/hostile/svg", "/test/hostile/big"):
        downloaded = _open_top(page, stacks.url + path)
        assert downloaded, f"{path} was rendered as a page of the bridge"
        assert page.title() != "pwned"
        assert _session_cookie(page) == cookie, f"{path} changed the session cookie"
    # 2. an inert type is shown, but in a sandbox: an opaque origin with no cookie access
    page.goto(stacks.url + "/test/hostile/data")
    assert "plain" in page.inner_text("body")
    assert page.evaluate("self.origin") == "null"
    assert _session_cookie(page) == cookie, "the JSON answer's Set-Cookie reached the browser"
    # 3. from inside the Explorer: framing the page, or loading the edge's JS as a script
    page.goto(stacks.url + "/")
    page.wait_for_selector("#nav a.plugin-link")
    page.evaluate("""() => new Promise(done => {
        const frame = document.createElement('iframe');
        frame.src = '/test/hostile/page';
        frame.onload = done; setTimeout(done, 3000);
        document.body.append(frame);
    })""")
    ran = page.evaluate("""() => new Promise(done => {
        const script = document.createElement('script');
        script.src = '/test/hostile/evil.js';
        script.onload = () => done('loaded'); script.onerror = () => done('refused');
        document.head.append(script);
    })""")
    assert ran == "refused"
    assert page.evaluate("window.__hostile_js") is None and page.evaluate("window.__hostile") is None
    assert page.title() == "Isthmus Explorer"
    page.wait_for_timeout(500)
    assert _stolen(stacks) == [], "the edge's script ran with the admin's session"
    assert _session_cookie(page) == cookie
    assert page.inner_text("#who") == "admin (admin)"  # still logged in, nothing cleared
    shot(page, "hostile-edge")


def _requests(page: Any) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    page.on("request", lambda r: seen.append((r.method, urlsplit(r.url).path)))
    return seen


def _submit_every_form(page: Any) -> None:
    """What an admin's clicks would do, including on buttons the Explorer disabled."""
    page.evaluate("document.querySelectorAll('form[data-form]').forEach(f => f.requestSubmit())")
    for button in page.locator("form[data-form] button[type=submit]:not([disabled])").all():
        button.click()


def test_explorer_refuses_ui_config_endpoints_outside_the_plugin(page, stacks: Stack) -> None:
    """Item 12(c): whatever the bridge lets through, the Explorer sends nothing to another edge.

    The manifest the page sees is pinned to the hostile one (``page.route``), so this checks
    the Explorer alone, also once the bridge drops or flags such manifests.
    """
    def hostile_edge_list(route: Any) -> None:
        data = route.fetch().json()
        plugin = data["edges"]["test"]["plugins"].setdefault("sneaky", {"name": "sneaky", "title": "Sneaky"})
        plugin["ui_config"] = HOSTILE_UI
        plugin.pop("error", None)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(data))

    page.route("**/edge/list*", hostile_edge_list)  # with or without its paging query
    page.route("**/events", lambda route: route.abort())  # no topology event replaces the pinned list
    hits_before = _victim_hits(stacks)
    seen = _requests(page)
    login(page, _admin(stacks))
    page.click("#nav a[data-plugin='sneaky']")
    page.wait_for_selector(".plugin-page[data-plugin='sneaky'] [data-monitor='ok'] pre")
    page.wait_for_timeout(1000)  # the monitors have polled: without a click
    assert [r for r in seen if r[1].startswith("/victim/")] == [], "a monitor reached the other edge"
    _submit_every_form(page)  # the admin's clicks
    page.wait_for_timeout(1500)
    shot(page, "sneaky-refused")
    to_victim = [r for r in seen if r[1].startswith("/victim/")]
    assert to_victim == [], f"requests reached the other edge: {to_victim}"
    assert _victim_hits(stacks) == hits_before
    plugin_requests = [p for _, p in seen if p.startswith("/test/")]
    assert plugin_requests and all(p.startswith("/test/sneaky/") for p in plugin_requests), plugin_requests
    # and the admin is told why: every escape monitor, the PUT form, the form whose id climbs
    # out, the options list; the session id that is a path
    refused = page.locator(".plugin-page[data-plugin='sneaky'] .refused")
    assert refused.count() == len(ESCAPES) + 3, page.inner_text(".plugin-page[data-plugin='sneaky']")
    assert page.locator("form[data-form='cfg'] button[type=submit]").is_disabled()
    assert "invalid session id" in page.inner_text("[data-monitor='sid']")
    assert page.errors == []


def test_hostile_manifest_end_to_end_reaches_no_other_edge(page, stacks: Stack, tmp_path: Path) -> None:
    """Item 12, unpinned: an edge announcing HOSTILE_UI to the real bridge, an admin in the Explorer.

    The bridge refuses or flags such a manifest (12b); if the plugin shows up at all, its
    page must still send nothing to the victim.
    """
    hits_before = _victim_hits(stacks)
    liar = _edge(stacks, "liar", "hostile_plugins:PluginLiar", tmp_path)
    try:
        seen = _requests(page)
        login(page, _admin(stacks))
        log = tmp_path / "edge.log"
        poll_for(lambda: "liar" in page.inner_text("#nav") or "refused" in log.read_text(), 30,
                 what="the liar edge connected or refused")
        if "liar" in page.inner_text("#nav"):
            page.goto(stacks.url + "/#/liar/liar")
            page.wait_for_selector(".plugin-page[data-plugin='liar'], #main p")
            page.wait_for_timeout(1000)
            _submit_every_form(page)
            page.wait_for_timeout(1500)
        else:
            assert "plugin 'liar'" in log.read_text()  # refused with the reason, naming the plugin
        assert [r for r in seen if r[1].startswith("/victim/")] == []
        assert _victim_hits(stacks) == hits_before
        assert page.errors == []
    finally:
        liar.send_signal(signal.SIGTERM)
        liar.wait(15)


def test_explorer_and_bridge_apply_the_same_endpoint_rules(page, stacks: Stack) -> None:
    """One rule set, two implementations (isthmus.sdk.ui and app.js): they must agree."""
    login(page, _admin(stacks))
    cases = [case for case, _ in ENDPOINT_CASES]
    verdicts = page.evaluate("""async cases => {
        const app = await import('/static/app.js');
        return cases.map(c => app.endpointProblem(c) === null);
    }""", cases)
    assert verdicts == [allowed for _, allowed in ENDPOINT_CASES]
    escapes = page.evaluate("""async () => {
        const app = await import('/static/app.js');
        const attempt = (...args) => { try { return app.pluginUrl(...args); } catch { return null; } };
        return [attempt('test', 'sneaky', 'version?a=1'), attempt('test', 'sneaky', '../../victim/x'),
                attempt('test', 'sneaky', '%2e%2e/%2e%2e/victim/x'), attempt('test', 'sneaky', '..\\\\..\\\\victim'),
                attempt('..', 'x', 'y'), attempt('test', 'sneaky', '//evil.example/x'),
                attempt('a b', 'p/q', 'x')];
    }""")
    assert escapes == ["/test/sneaky/version?a=1", None, None, None, None, "/test/sneaky///evil.example/x",
                       "/a%20b/p%2Fq/x"]
