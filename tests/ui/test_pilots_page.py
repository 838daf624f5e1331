"""The pilots page (plugins/pilots/ui.js): pools with their pilots and queue, live; create and cancel."""

from __future__ import annotations

from typing import Any

from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack, poll_for
from tests.ui.conftest import login


def until(page: Any, predicate: str, timeout: float = 30) -> Any:
    return poll_for(lambda: page.evaluate(predicate), timeout, interval=0.1, what=predicate)


def test_pools_show_their_pilots_live_and_cancel(page, tmp_path) -> None:
    config = {"scheduler": "none", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]},
                                               "pilots": {"tick": 0.2}}}
    with Stack(plugins=["psij", "pilots"], edge="lab", config=config, workdir=tmp_path) as s:
        pilots = s.client().get_edge_client("lab").get_plugin("pilots", PilotsClient)
        login(page, {"url": s.url, "token": s.admin_token})
        page.goto(s.url + "/#/lab/pilots")
        page.wait_for_selector(".pilots-create")
        assert page.is_visible(".pl-empty")
        page.fill("#pl-name", "viewed")
        page.fill("#pl-min", "1")
        page.fill("#pl-max", "1")
        page.click(".pilots-create button[type=submit]")
        page.wait_for_selector("section[data-pool='viewed']")
        assert [p["name"] for p in pilots.list_pools()] == ["viewed"]
        # the pilot's child edge shows up as READY without a reload (pool_status events)
        until(page, "() => [...document.querySelectorAll(\"section[data-pool='viewed'] .pl-pilots td\")]"
                    ".some(td => td.textContent.startsWith('lab.viewed.'))")
        until(page, "() => document.querySelector(\"section[data-pool='viewed'] .badge.st-READY\") !== null")
        page.click("section[data-pool='viewed'] button.danger")
        poll_for(lambda: not pilots.list_pools(), 30, 0.2, what="the pool cancelled and gone")
        assert page.errors == []
