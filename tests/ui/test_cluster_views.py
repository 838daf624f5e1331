"""Cluster views, charts over time, node detail, drain/resume, the wallboard and the simulator
panel, in real chromium against `isthmus demo` (504 simulated nodes)."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus.testing.stack import poll_for
from tests.ui.axe import check_axe
from tests.ui.conftest import login

DOCS_IMG = Path(__file__).parents[2] / "docs" / "img"
VIEWS = ("rooms", "nodes", "partitions", "charts", "wallboard")


def api(demo: dict[str, str], method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, demo["url"] + path, headers={"Authorization": f"Bearer {demo['token']}"},
                         timeout=30, **kwargs)


def doc_shot(page: Any, name: str, full_page: bool = False) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / f"{name}.png"), full_page=full_page)


@pytest.fixture(scope="module")
def fast(demo: dict[str, str]) -> Iterator[dict[str, str]]:
    """The demo with a sample every second (the default is every 15 s), and three samples taken."""
    put = api(demo, "PUT", "/demo/_edge/plugins/cluster/config", json={"history_interval": 1, "refresh_interval": 1})
    assert put.status_code == 200, put.text
    poll_for(lambda: api(demo, "GET", "/demo/cluster/history").json()["samples"] >= 3, 30, what="3 history samples")
    yield demo


def show(page: Any, demo: dict[str, str], view: str | None) -> None:
    page.goto(demo["url"] + "/#/demo/cluster" + (f"/{view}" if view else ""))
    page.wait_for_selector(f".cl-tabs a[data-view='{view or 'overview'}'][aria-current='page']", state="attached")


def until(page: Any, predicate: str, arg: Any = None, timeout: float = 10) -> None:
    """Wait for a page predicate (evaluated through Playwright: the CSP forbids wait_for_function's eval)."""
    poll_for(lambda: page.evaluate(predicate, arg), timeout, interval=0.1, what=predicate)


def visible(page: Any, selector: str) -> bool:
    return bool(page.locator(selector).first.is_visible())


def test_nodes_partitions_and_rooms_are_three_views(page, fast) -> None:
    login(page, fast)
    menu = api(fast, "GET", "/menu").json()["sections"]
    paths = {i["label"]: i["path"] for s in menu if s["id"] == "cluster" for i in s["items"]}
    assert paths["Rooms"] != paths["Nodes"] != paths["Partitions"] and paths["Wallboard"] == "/cluster/wallboard"

    show(page, fast, "nodes")
    page.wait_for_selector(".cl-nodes tr[data-node='c001']")
    assert not visible(page, ".cl-room") and not visible(page, ".cl-parts") and not visible(page, ".slot")
    assert page.locator(".cl-nodes tbody tr").count() == 504
    page.click(".cl-nodes th button[data-sort='temperature']")  # ascending, then descending
    page.click(".cl-nodes th button[data-sort='temperature']")
    assert page.get_attribute(".cl-nodes th:has(button[data-sort='temperature'])", "aria-sort") == "descending"
    temps = [float(t) for t in page.locator(".cl-nodes tbody tr td:nth-child(7)").all_inner_texts()[:50]]
    assert temps == sorted(temps, reverse=True) and temps[0] > temps[-1]
    page.fill("#cl-filter", "g0")
    until(page, "() => document.querySelectorAll('.cl-nodes tbody tr').length === 24")
    assert "24 of 504 nodes" in page.inner_text(".cl-shown")
    page.fill("#cl-filter", "")
    page.select_option("#cl-partition", "gpu")
    until(page, "() => document.querySelectorAll('.cl-nodes tbody tr').length === 24")
    doc_shot(page, "cluster-nodes")

    show(page, fast, "partitions")
    page.wait_for_selector(".cl-parts tr[data-partition='cpu']")
    assert not visible(page, ".cl-nodes") and not visible(page, ".slot")
    cpu = next(p for p in api(fast, "GET", "/demo/cluster/partitions").json()["partitions"] if p["name"] == "cpu")
    assert page.inner_text(".cl-parts tr[data-partition='cpu'] td:nth-child(3)").endswith(f"/{cpu['total_nodes']}")
    page.wait_for_selector(".cl-part-charts .ts-chart[data-series='2']")
    doc_shot(page, "cluster-partitions", full_page=True)

    show(page, fast, "rooms")
    page.wait_for_selector(".slot[data-node='c001']")
    assert not visible(page, ".cl-nodes") and not visible(page, ".cl-parts")
    assert page.locator(".cl-rooms [role=tab][aria-selected=true]").count() == 1
    # the room's two charts drawn from the history API before the picture is taken
    until(page, """() => { const figs = [...document.querySelectorAll('.cl-room-charts .ts-chart')];
        return figs.length === 2 && figs.every(f => Number(f.dataset.points) > 0); }""")
    captions = page.locator(".cl-room-charts .ts-chart figcaption").all_inner_texts()
    assert [c.split(": ")[-1] for c in captions] == ["hottest node", "power"], captions
    doc_shot(page, "cluster-rooms", full_page=True)
    assert page.errors == []


def chart_state(page: Any, title: str) -> dict[str, Any]:
    fig = page.locator(f".ts-chart:has(figcaption:text-is('{title}'))")
    return {"points": int(fig.get_attribute("data-points")), "series": int(fig.get_attribute("data-series")),
            "last_x": float(fig.get_attribute("data-last-x")), "last_y": json.loads(fig.get_attribute("data-last-y")),
            "summary": fig.locator(".ts-summary").inner_text()}


def test_charts_draw_the_history_apis_points(page, fast) -> None:
    login(page, fast)
    show(page, fast, "charts")
    page.wait_for_selector(".ts-chart:has(figcaption:text-is('Temperature of every node'))[data-points]",
                           timeout=20000)
    util = chart_state(page, "Cluster CPU utilisation")
    answer = api(fast, "GET", "/demo/cluster/history", params={"metric": "util"}).json()
    times, values = answer["data"]
    assert answer["series"][0]["unit"] == "%" and util["series"] == 1
    i = times.index(util["last_x"])  # the chart holds every sample the API had up to its last one
    assert util["points"] == i + 1 >= 3
    assert util["last_y"] == [values[i]]
    assert "latest" in util["summary"] and "util" in util["summary"]
    every = chart_state(page, "Temperature of every node")
    assert every["series"] == 504 and every["points"] >= 3
    assert page.locator(".ts-chart .uplot canvas").count() >= 6
    doc_shot(page, "cluster-charts", full_page=True)
    # live: new samples are appended without reloading the page (the chart polls every 15 s)
    until(page, "(x) => Number(document.querySelector('.ts-chart[data-series=\"1\"]').dataset.lastX) > x",
          util["last_x"], timeout=25)
    assert page.errors == []


def test_node_detail_table_sparkline_and_drain_resume(page, fast) -> None:
    override = {"target": "c002", "kind": "metric", "key": "temperature", "value": 66.5, "ttl": 600}
    assert api(fast, "POST", "/demo/simulator/overrides", json=override).status_code == 200
    poll_for(lambda: api(fast, "GET", "/demo/cluster/node/c002").json()["history"]["temperature"][-1] == 66.5, 20,
             what="the override in the node's history")
    login(page, fast)
    show(page, fast, "nodes")
    page.click(".cl-nodes tr[data-node='c002'] td:first-child button")
    page.wait_for_selector(".node-detail table.cl-metrics")
    row = page.locator(".node-detail tr[data-metric='temperature']")
    assert row.locator("td").nth(0).inner_text() == "66.5 °C"
    spark = row.locator("svg.sparkline")
    assert spark.get_attribute("role") == "img" and "latest 66.5" in spark.get_attribute("aria-label")
    assert spark.locator("polyline").count() >= 1
    assert "rack" in page.inner_text(".node-detail .cl-facts")
    assert page.locator(".node-detail tr[data-metric]").count() == 4
    doc_shot(page, "cluster-node-detail")

    page.fill(".node-detail input[name='reason']", "fan replacement <b>today</b>")
    page.click(".node-detail .cl-drain button[type=submit]")
    poll_for(lambda: api(fast, "GET", "/demo/cluster/node/c002").json()["reason"] == "fan replacement <b>today</b>",
             15, what="the drain in the API")
    node = api(fast, "GET", "/demo/cluster/node/c002").json()
    assert node["state"] in ("drained", "draining") and node["severity"] == "WARN"
    page.wait_for_selector(".node-detail p:has-text('fan replacement <b>today</b>')")  # text, not markup
    assert page.locator(".node-detail b").count() == 0
    page.click(".node-detail .cl-resume:not([disabled])")
    poll_for(lambda: api(fast, "GET", "/demo/cluster/node/c002").json()["reason"] is None, 15, what="the resume")
    assert api(fast, "GET", "/demo/cluster/node/c002").json()["state"] not in ("drained", "draining")
    page.keyboard.press("Escape")
    assert page.errors == []


def test_wallboard_full_screen_live_and_readable(page, fast) -> None:
    login(page, fast)
    show(page, fast, "wallboard")
    page.wait_for_selector(".cl-wall-rack[data-rack='r03']")
    assert page.locator(".cl-wall-rack").count() == 12  # 2 rooms × (5 CPU + 1 GPU) racks
    box = page.locator(".plugin-page[data-plugin='cluster']").bounding_box()
    assert box["x"] == 0 and box["y"] == 0 and box["width"] == 1280 and box["height"] == 800  # covers the app
    size = float(page.evaluate("parseFloat(getComputedStyle(document.querySelector('.cl-tile strong')).fontSize)"))
    assert size >= 40, f"tile numbers are {size}px: not readable from across a room"
    assert page.inner_text(".cl-wall-rack[data-rack='r03']").find("OK") >= 0
    assert api(fast, "POST", "/demo/simulator/incident",
               json={"type": "rack_down", "target": "r03", "duration": 120}).status_code == 200
    refreshed = page.get_attribute(".cl-wall", "data-refreshed")
    page.wait_for_selector(".cl-wall-rack[data-rack='r03'][data-severity='CRIT']", timeout=25000)  # no reload
    assert page.get_attribute(".cl-wall", "data-refreshed") != refreshed
    assert "✖ CRIT" in page.inner_text(".cl-wall-rack[data-rack='r03']")  # text and icon, not colour alone
    doc_shot(page, "cluster-wallboard")
    page.keyboard.press("Escape")
    until(page, "() => location.hash === '#/demo/cluster'")
    page.wait_for_selector(".cl-tabs a[data-view='overview'][aria-current='page']", state="attached")
    assert not page.locator(".plugin-page.cl-wallboard").count()
    api(fast, "POST", "/demo/simulator/tick", json={"seconds": 121})
    assert page.errors == []


def test_simulator_panel_lists_incidents_with_time_left(page, fast) -> None:
    assert api(fast, "POST", "/demo/simulator/incident",
               json={"type": "node_down", "target": "c030", "duration": 900}).status_code == 200
    login(page, fast)
    page.goto(fast["url"] + "/#/demo/simulator")
    row = page.locator(".sim-active tr:has(td:text-is('c030'))")
    row.wait_for()
    assert "node down" in row.inner_text()
    first = row.locator(".sim-left").inner_text()
    assert re.fullmatch(r"1[45] min \d+ s", first), first
    until(page, "(t) => document.querySelector('.sim-active tr:last-child .sim-left').textContent !== t",
          first, timeout=5)  # counts down between reads
    status = api(fast, "GET", "/demo/simulator/status").json()
    assert page.inner_text(".sim-stats div:has(dt:text-is('Nodes')) dd") == str(status["nodes"])
    assert page.inner_text(".sim-stats div:has(dt:text-is('Mode')) dd") == status["mode"]
    assert page.locator(".sim-status pre").count() == 0  # a panel, not JSON
    doc_shot(page, "simulator", full_page=True)
    assert page.errors == []


def test_axe_finds_no_serious_violations_at_both_widths(page, fast) -> None:
    login(page, fast)
    problems: dict[str, list[dict[str, Any]]] = {}
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        for view in (None, *VIEWS):
            show(page, fast, view)
            page.wait_for_selector(".cl-wall-rack" if view == "wallboard"
                                   else ".plugin-page[data-plugin='cluster'] .card:not(.hidden)")
            if view in ("charts", "partitions"):
                page.wait_for_selector(".ts-chart[data-points]")
            if view == "nodes":
                page.wait_for_selector(".cl-nodes tr[data-node]")
            problems[f"{view}@{width}"] = check_axe(page, ".plugin-page[data-plugin='cluster']")
            overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{view} overflows by {overflow}px at {width}px"
        show(page, fast, "nodes")
        page.click(".cl-nodes tr[data-node='c001'] td:first-child button")
        page.wait_for_selector(".node-detail table.cl-metrics")
        problems[f"node-detail@{width}"] = check_axe(page, "#overlay")
        page.keyboard.press("Escape")
        page.goto(fast["url"] + "/#/demo/simulator")
        page.wait_for_selector(".sim-stats")
        problems[f"simulator@{width}"] = check_axe(page, ".plugin-page[data-plugin='simulator']")
    assert {k: v for k, v in problems.items() if v} == {}
    page.evaluate("document.querySelector('.sim-status').append(document.createElement('button'))")
    assert [v["id"] for v in check_axe(page, ".plugin-page[data-plugin='simulator']")] == ["button-name"]  # it can fail
    doc_shot(page, "simulator-phone", full_page=False)


def test_keyboard_reaches_views_sort_and_node_detail(page, fast) -> None:
    login(page, fast)
    show(page, fast, "nodes")
    page.wait_for_selector(".cl-nodes tr[data-node]")
    page.focus(".cl-nodes th button[data-sort='name']")
    page.keyboard.press("Enter")  # sort by name, descending
    page.wait_for_selector(".cl-nodes th[aria-sort='descending'] button[data-sort='name']")
    assert page.inner_text(".cl-nodes tbody tr:first-child td:first-child") == "g024"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector(".cl-nodes th[aria-sort='ascending'] button[data-sort='state']")
    page.focus(".cl-nodes tr[data-node='c001'] td:first-child button")
    page.keyboard.press("Enter")
    page.wait_for_selector(".node-detail")
    assert page.evaluate("document.activeElement.id") == "overlay-close"
    page.keyboard.press("Escape")
    page.focus(".cl-tabs a[data-view='partitions']")
    page.keyboard.press("Enter")
    page.wait_for_selector(".cl-parts tr[data-partition='gpu']")
    assert page.errors == []


def test_chart_updates_stay_smooth_with_500_nodes_for_an_hour(page, fast) -> None:
    """500 series × 360 samples (1 h at 10 s): first draw and updates timed in chromium."""
    login(page, fast)
    timings = page.evaluate("""async () => {
      const { timeSeries } = await import('/static/charts.js');
      const box = document.createElement('div');
      document.querySelector('#main').append(box);
      const n = 360, series = 500, t0 = 1.8e9;
      const data = [Array.from({ length: n }, (_, i) => t0 + 10 * i)];
      for (let s = 0; s < series; s++) data.push(Array.from({ length: n }, (_, i) => 40 + 20 * Math.sin((i + s) / 30)));
      const frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
      let start = performance.now();
      const names = Array.from({ length: series }, (_, s) => ({ label: 'n' + s, unit: '°C' }));
      const chart = timeSeries(box, { title: 'bench', series: names, data, height: 300 });
      await frame();
      const first = performance.now() - start;
      const updates = [], sync = [];
      for (let k = 0; k < 20; k++) {
        for (const col of data) col.shift();
        data[0].push(data[0][data[0].length - 1] + 10);
        for (let s = 1; s <= series; s++) data[s].push(40 + 20 * Math.sin((n + k + s) / 30));
        start = performance.now();
        chart.update(data);
        sync.push(performance.now() - start);
        await frame();
        updates.push(performance.now() - start);
      }
      box.remove();
      return { first, updates, sync };
    }""")
    median = statistics.median(timings["updates"])
    work = statistics.median(timings["sync"])
    print(f"\ncharts: 500 series × 360 samples: first draw {timings['first']:.0f} ms, update median {median:.1f} ms "
          f"to the next frame (max {max(timings['updates']):.1f}), {work:.1f} ms of it in update()")
    assert median < 50 and work < 30, timings
