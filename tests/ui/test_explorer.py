"""The Explorer in a real chromium against `isthmus demo` (and a Stack for hostile names)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from isthmus.testing.stack import Stack, poll_for
from tests.conftest import support_env
from tests.ui.conftest import login, shot


def api(demo, method: str, path: str, **kwargs):
    return httpx.request(method, demo["url"] + path, headers={"Authorization": f"Bearer {demo['token']}"}, **kwargs)


def test_login_edges_sysinfo_logout(page, demo) -> None:
    page.goto(demo["url"] + "/")
    page.wait_for_selector("#login:not(.hidden)")  # after whoami's 401 (and asking whether SSO is on)
    assert page.is_hidden("#oidc-login"), "no single sign-on button without auth.oidc"
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector(".flash .error")
    assert "not valid" in page.inner_text(".flash")
    login(page, demo)
    assert page.inner_text("#who") == "admin (admin)"
    assert "demo" in page.inner_text("#nav")
    page.wait_for_selector("#stream.live")
    page.click("#nav a[href='#/demo/sysinfo']")
    page.wait_for_selector(".sys-info table")
    assert "CPU" in page.inner_text(".sys-info")
    page.wait_for_selector(".sys-now:has-text('CPU')")
    assert page.locator(".plugin-page[data-plugin='sysinfo'] .config-link").count() == 0  # nothing to configure
    shot(page, "sysinfo")
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "isthmus_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == "" and page.evaluate("localStorage.length") == 0
    page.click("#logout")
    page.wait_for_selector("#login:not(.hidden)")
    page.reload()
    page.wait_for_selector("#login:not(.hidden)")
    assert page.errors == []


def test_psij_job_reaches_completed_with_output(page, demo) -> None:
    login(page, demo)
    page.click("#nav a[href='#/demo/psij']")
    page.wait_for_selector(".psij-submit")
    page.fill("#psij-args", "hello from the explorer")
    page.click(".psij-submit button[type=submit]")
    page.wait_for_selector(".psij-jobs .st-DONE", timeout=30000)
    page.click(".psij-jobs tbody tr:first-child td:first-child button")
    page.wait_for_selector(".job-stdout")
    assert page.inner_text(".job-stdout").strip() == "hello from the explorer"
    assert "DONE" in page.inner_text("#taskbar")
    shot(page, "psij")
    page.keyboard.press("Escape")
    assert page.errors == []


def test_room_view_finds_the_down_node_and_overrides_show(page, demo) -> None:
    assert api(demo, "POST", "/demo/simulator/incident",
               json={"type": "node_down", "target": "c007", "duration": 600}).status_code == 200
    login(page, demo)
    page.click("#nav a[href='#/demo/cluster']")
    page.wait_for_selector(".cl-rooms button")
    node = ".slot[data-node='c007'][data-severity='CRIT']"
    page.wait_for_selector(node, timeout=20000)
    assert "CRIT" in page.get_attribute("[data-rack='r01'] h4 .sev", "class")
    shot(page, "cluster-room")
    page.click(node)
    page.wait_for_selector(".node-detail")
    assert "down" in page.inner_text(".node-detail")
    page.keyboard.press("Escape")
    page.select_option(".cl-state", "down")
    page.wait_for_selector(".cl-nodes tr[data-node='c007']")
    page.goto(demo["url"] + "/#/demo/simulator")
    page.wait_for_selector(".sim-override")
    page.fill("#sim-ot", "c010")
    page.fill("#sim-value", "99")
    page.click(".sim-override button[type=submit]")
    page.wait_for_selector(".sim-overrides tr:has-text('c010')")
    assert "temperature = 99" in page.inner_text(".sim-overrides")
    shot(page, "simulator")
    poll_for(lambda: api(demo, "GET", "/demo/cluster/node/c010").json()["metrics"]["temperature"] == 99, 15,
             what="the override in the cluster view (refreshed every 5 s)")
    assert page.errors == []


def test_admin_config_editor_shows_field_errors(page, demo) -> None:
    login(page, demo)
    page.click("#nav a[href='#/demo/cluster']")
    page.click(".plugin-page[data-plugin='cluster'] .config-link")
    page.wait_for_selector(".config-form input[name='refresh_interval']")
    page.fill("input[name='refresh_interval']", "0")
    page.click(".config-form button[type=submit]")
    page.wait_for_selector("[data-error-for='refresh_interval']:not(:empty)")
    assert "greater than 0" in page.inner_text("[data-error-for='refresh_interval']")
    page.fill("input[name='refresh_interval']", "4")
    page.click(".config-form button[type=submit]")
    page.wait_for_selector(".flash div:has-text('Saved')")
    assert api(demo, "GET", "/demo/_edge/plugins/cluster/config").json()["values"]["refresh_interval"] == 4


def test_security_headers_keyboard_widths_and_dark(page, demo) -> None:
    resp = httpx.get(demo["url"] + "/")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["x-frame-options"] == "DENY"
    page.goto(demo["url"] + "/")
    page.wait_for_selector("#login:not(.hidden)")  # the form shows after whoami's 401: tab only then
    assert page.evaluate("document.activeElement.id") == "token"  # the login puts the cursor there
    page.evaluate("document.activeElement.blur()")  # and from the top of the page, Tab reaches it
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "token":
            break
    assert page.evaluate("document.activeElement.id") == "token"
    login(page, demo)
    page.click("#nav a[href='#/demo/cluster']")
    page.wait_for_selector(".slot")
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(200)
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"horizontal overflow of {overflow}px at {width}px"
        shot(page, f"cluster-{width}")
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 1280, "height": 800})
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    shot(page, "cluster-dark")


def test_room_view_loads_under_a_second(page, demo) -> None:
    login(page, demo)
    page.goto(demo["url"] + "/#/demo/cluster")
    page.wait_for_selector(".slot")
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        page.reload()
        page.locator(".slot").nth(249).wait_for()  # the first room: 252 nodes in 6 racks
        timings.append(time.perf_counter() - start)
    assert min(timings) < 1.0, f"page load took {timings}"


def test_hostile_names_render_as_text_and_edges_come_and_go(page, tmp_path) -> None:
    with Stack(plugins=["sysinfo", "testplugins:PluginEvil"], env=support_env()) as s:
        login(page, {"url": s.url, "token": s.admin_token})
        link = page.locator("#nav a[data-plugin='evil']")
        assert "<img src=x onerror=" in link.inner_text()
        assert page.locator("#nav img").count() == 0
        link.click()
        page.wait_for_selector(".plugin-page[data-plugin='evil']")
        assert "<script>" in page.inner_text(".plugin-page[data-plugin='evil']")
        assert page.evaluate("window.__pwned") is None
        env = {**os.environ, "ISTHMUS_EDGE_TOKEN": s.edge_token, "XDG_STATE_HOME": str(tmp_path)}
        late = subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge", f"ws://127.0.0.1:{s.port}",
                                 "--name", "late", "--plugins", "sysinfo"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            page.wait_for_selector("#nav .edge-name:text-is('late')", timeout=20000)
        finally:
            late.send_signal(signal.SIGTERM)
            late.wait(15)
        page.wait_for_selector("#nav .edge-name:text-is('late')", state="detached", timeout=20000)
        assert page.errors == []
