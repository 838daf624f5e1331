"""The workflows page (plugins/workflows/ui.js): a workflow as a graph of steps with live states."""

from __future__ import annotations

from typing import Any

from isthmus.plugins.workflows.client import WorkflowsClient
from isthmus.testing.stack import Stack, poll_for
from tests.ui.conftest import login

HOSTILE = '<img src=x onerror="window.pwned=1">'


def until(page: Any, predicate: str, timeout: float = 20) -> Any:
    return poll_for(lambda: page.evaluate(predicate), timeout, interval=0.1, what=predicate)


def test_graph_shows_steps_and_follows_their_states(page, tmp_path) -> None:
    config = {"scheduler": "none", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}}}
    with Stack(plugins=["psij"], edge="lab", config=config, bridge_plugins=["workflows"], workdir=tmp_path) as s:
        client = s.client().get_edge_client("bridge").get_plugin("workflows", WorkflowsClient)
        sleep = {"kind": "job", "edge": "lab", "spec": {"executable": "/bin/sleep", "arguments": ["3"]}}
        first = {**sleep, "spec": {"executable": "/bin/sleep", "arguments": ["6"]}}
        wid = client.submit({"name": HOSTILE, "steps": {"first": first, "second": {**sleep, "needs": ["first"]},
                                                         "third": {**sleep, "needs": ["first"]}}})
        login(page, {"url": s.url, "token": s.admin_token})
        page.goto(s.url + "/#/bridge/workflows")
        page.wait_for_selector(f"tr[data-wf='{wid}'] button")
        page.click(f"tr[data-wf='{wid}'] button.link")
        page.wait_for_selector(".wf-graph svg g.wf-step")
        layout = page.evaluate("""() => [...document.querySelectorAll('.wf-graph g.wf-step')].map(g =>
            [g.dataset.step, g.getAttribute('transform')])""")
        xs = {step: float(t.split("(")[1].split(",")[0]) for step, t in layout}
        assert xs["first"] < xs["second"] == xs["third"]  # one column per depth
        assert page.locator(".wf-graph line").count() == 2  # the two `needs` edges
        # live: drawn while the later steps were still to run, the boxes then follow the events
        assert page.evaluate("() => document.querySelector(\"g[data-step='second']\").classList"
                             ".contains('wf-s-PENDING')")
        until(page, "() => document.querySelector(\"g[data-step='second']\").classList.contains('wf-s-RUNNING')")
        assert client.wait(wid, timeout=60)["state"] == "DONE"
        until(page, "() => [...document.querySelectorAll('.wf-graph g.wf-step')]"
                    ".every(g => g.classList.contains('wf-s-DONE'))")
        # a hostile name is text, never markup
        assert HOSTILE in page.text_content(".wf-title")
        assert page.locator(".plugin-page img, .wf-list img").count() == 0
        assert page.evaluate("() => window.pwned === undefined")
        assert page.errors == []
