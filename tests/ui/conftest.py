"""Playwright with Debian's chromium (never a downloaded browser) against real bridges and edges."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from isthmus.testing.stack import free_port, poll_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API holds an event loop on this thread while it runs,
    which must be gone before later tests start their own loops."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is needed: run `make system-deps` as root", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[dict[str, str]]:
    """`isthmus demo` as a user runs it: bridge + simulated-cluster edge in one process."""
    work = tmp_path_factory.mktemp("demo")
    port = free_port()
    token_file = work / "token"
    env = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "XDG_CONFIG_HOME": str(work / "config")}
    proc = subprocess.Popen([sys.executable, "-m", "isthmus", "demo", "--port", str(port), "--token-file",
                             str(token_file)], env=env, cwd=work, stdout=subprocess.DEVNULL,
                            stderr=open(work / "demo.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        poll_for(lambda: token_file.exists() and token_file.read_text().strip(), 30, what="demo token")
        token = token_file.read_text().strip()
        poll_for(lambda: "demo" in httpx.get(f"{url}/edge/list", headers={"Authorization": f"Bearer {token}"}).json()
                 ["edges"], 30, what="demo edge")
        yield {"url": url, "token": token}
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    yield pg
    context.close()


def login(page, demo: dict[str, str]) -> None:
    page.goto(demo["url"] + "/")
    page.fill("#token", demo["token"])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#nav a.plugin-link")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait(seconds: float) -> None:
    time.sleep(seconds)
