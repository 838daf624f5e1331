"""The Explorer's "Log in with …" in chromium, through the real provider's login page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from isthmus.testing.oidc import OidcProvider
from isthmus.testing.stack import Stack, poll_for
from tests.ui.conftest import shot

PSIJ = {"scheduler": "none", "plugins": {"psij": {"enabled": True, "allowed_directories": ["~", "/tmp"]}}}


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OidcProvider, Stack]]:
    idp = OidcProvider(workdir=tmp_path_factory.mktemp("idp"))
    bridge = Stack(plugins=["psij"], workdir=tmp_path_factory.mktemp("bridge"),
                   config={**PSIJ, "auth": {"oidc": idp.bridge_config(label="Test IdP")}})
    idp.redirect_uris = [f"{bridge.url}/auth/oidc/callback"]
    with idp, bridge:
        yield idp, bridge


def test_log_in_with_the_identity_provider_submit_a_job_log_out(page, sso) -> None:
    idp, bridge = sso
    page.goto(bridge.url + "/")
    page.wait_for_selector("#oidc-login:not(.hidden)")
    assert page.inner_text("#oidc-button") == "Log in with Test IdP"
    page.click("#oidc-button")

    page.wait_for_url(f"{idp.url}/interaction/**")  # the provider's own login page
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{idp.url}/interaction/**")  # and its consent page
    page.click("button[type=submit]")

    page.wait_for_url(f"{bridge.url}/**")
    page.wait_for_selector("#nav a.plugin-link")
    assert page.inner_text("#who") == "Alice Liddell (user)"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["isthmus_session"]["httpOnly"] and cookies["isthmus_session"]["sameSite"] == "Strict"
    assert cookies["isthmus_oidc_refresh"]["httpOnly"] and cookies["isthmus_oidc_refresh"]["path"] == "/auth/oidc"
    assert page.evaluate("document.cookie") == ""  # the page never holds a token

    page.click("#nav a[href='#/test/psij']")
    page.wait_for_selector(".psij-submit")
    page.fill("#psij-args", "hello from single sign-on")
    page.click(".psij-submit button[type=submit]")
    page.wait_for_selector(".psij-jobs .st-DONE", timeout=30000)
    jobs = bridge.client().get_edge_client("test").get_plugin("psij").list_jobs()  # the admin sees every job
    assert [j["owner"] for j in jobs] == ["oidc:alice"]
    shot(page, "oidc-login")

    page.click("#logout")
    page.wait_for_selector("#login:not(.hidden)")
    assert {c["name"] for c in page.context.cookies()}.isdisjoint({"isthmus_session", "isthmus_oidc_refresh"})
    page.reload()
    page.wait_for_selector("#oidc-login:not(.hidden)")
    assert page.is_visible("#login")
    assert page.errors == []


def test_an_expired_session_is_renewed_with_the_refresh_cookie(page, sso) -> None:
    """The session cookie gone (as when the access token expires): the page renews it once
    through /auth/oidc/refresh instead of asking for a login."""
    idp, bridge = sso
    page.goto(bridge.url + "/")
    page.click("#oidc-button")
    page.wait_for_url(f"{idp.url}/interaction/**")
    page.fill("input[name=login]", "root")
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{idp.url}/interaction/**")
    page.click("button[type=submit]")
    page.wait_for_selector("#nav a.plugin-link")
    assert page.inner_text("#who") == "Root Admin (admin)"

    page.context.clear_cookies(name="isthmus_session")
    page.reload()
    page.wait_for_selector("#nav a.plugin-link")
    assert page.inner_text("#who") == "Root Admin (admin)"
    assert "isthmus_session" in {c["name"] for c in page.context.cookies()}

    page.context.clear_cookies(name="isthmus_session")  # now while the page runs: its next call renews
    page.click("#nav a[href='#/test/psij']")
    page.wait_for_selector(".psij-submit")
    # the page's template shows before its first call; that call's 401 is what renews the session
    poll_for(lambda: "isthmus_session" in {c["name"] for c in page.context.cookies()}, 15, 0.1,
             what="the session cookie renewed")
    assert page.is_hidden("#login") and page.inner_text("#who") == "Root Admin (admin)"
    assert page.errors == []
