"""The Explorer's everyday pages in a real chromium against `isthmus demo`: the dashboard,
merged menus, the Jobs page (composer, live state, output tail), the Files page (a 50 MB
upload with progress, downloaded back), axe-core and a phone's width.

Screenshots go to docs/img/ (used by docs/explorer.md)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from isthmus.plugins.psij.client import is_final
from isthmus.testing.stack import Stack, poll_for
from tests.ui.axe import check_axe
from tests.ui.conftest import login

DOCS_IMG = Path(__file__).parents[2] / "docs" / "img"


def api(demo: dict[str, str], method: str, path: str, **kwargs: Any) -> Any:
    resp = httpx.request(method, demo["url"] + path, headers={"Authorization": f"Bearer {demo['token']}"},
                         timeout=30, **kwargs)
    resp.raise_for_status()
    return resp.json()


def session(demo: dict[str, str], plugin: str) -> str:
    sid: str = api(demo, "POST", f"/demo/{plugin}/register_session")["sid"]
    return sid


def doc_shot(page: Any, name: str) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / f"{name}.png"))


def stat(page: Any, key: str) -> int:
    return int(page.inner_text(f"[data-edge='demo'] [data-stat='{key}'] .stat-value"))


SLEEPER = {"executable": "/bin/sleep", "arguments": ["300"]}


def api_numbers(demo: dict[str, str], sids: dict[str, str]) -> dict[str, int]:
    """What the dashboard's demo card should show, read from the API the way a script would."""
    summary = api(demo, "GET", "/demo/cluster/summary")["by_severity"]
    queue = api(demo, "GET", f"/demo/queue_info/list_all_jobs/{sids['queue_info']}?user=*")["jobs"]
    parts = api(demo, "GET", "/demo/cluster/partitions")["partitions"]
    mine = api(demo, "GET", f"/demo/psij/list_jobs/{sids['psij']}?limit=1000")["jobs"]
    tasks = api(demo, "GET", "/demo/tasks/task_counts")["counts"]
    pools = api(demo, "GET", "/demo/pilots/list_pools")["pools"]
    return {**{f"sev-{k}": v for k, v in summary.items()},
            "running": sum(j["state"] == "RUNNING" for j in queue),
            "pending": sum(j["state"] == "PENDING" for j in queue),
            **{f"free-{p['name']}": p["idle_nodes"] for p in parts},
            **{f"total-{p['name']}": p["total_nodes"] for p in parts},
            "my-jobs": sum(not is_final(j["state"]) for j in mine), "my-tasks": tasks["RUNNING"],
            **pool_numbers(pools)}


def pool_numbers(pools: list[dict[str, Any]]) -> dict[str, int]:
    out = {"my-pools": len(pools)}
    for p in pools:
        out |= {f"pilots-{p['name']}": sum(x["state"] == "READY" for x in p["pilots"]),
                f"max-{p['name']}": p["spec"]["max_size"], f"queued-{p['name']}": p["queued"]}
    return out


def shown_pools(page: Any) -> dict[str, int]:
    out = {"my-pools": stat(page, "my-pools")}
    for row in page.query_selector_all("[data-edge='demo'] tr[data-pool]"):
        name = row.get_attribute("data-pool")
        for key in ("pilots", "max", "queued"):
            out[f"{key}-{name}"] = int(row.query_selector(f".{key}").inner_text())
    return out


def shown_numbers(page: Any) -> dict[str, int]:
    out = {k: stat(page, k) for k in ("sev-OK", "sev-WARN", "sev-CRIT", "sev-UNKNOWN", "running", "pending",
                                      "my-jobs", "my-tasks")}
    for row in page.query_selector_all("[data-edge='demo'] tr[data-partition]"):
        name = row.get_attribute("data-partition")
        out[f"free-{name}"] = int(row.query_selector(".free").inner_text())
        out[f"total-{name}"] = int(row.query_selector(".total").inner_text())
    return {**out, **shown_pools(page)}


def test_dashboard_shows_the_api_numbers(page, demo) -> None:
    api(demo, "POST", "/demo/simulator/incident", json={"type": "node_down", "target": "c011", "duration": 600})
    poll_for(lambda: api(demo, "GET", "/demo/cluster/summary")["by_severity"]["CRIT"] >= 1, 20,
             what="the down node in the cluster summary")
    sids = {name: session(demo, name) for name in ("queue_info", "psij", "tasks", "pilots")}
    jobs = [api(demo, "POST", f"/demo/psij/submit_job/{sids['psij']}", json={"job_spec": SLEEPER})["job_id"]]
    api(demo, "POST", f"/demo/tasks/submit_tasks/{sids['tasks']}", json={"tasks": [SLEEPER] * 2})
    poll_for(lambda: api(demo, "GET", "/demo/tasks/task_counts")["counts"]["RUNNING"] == 2, 30,
             what="two tasks running")
    try:
        login(page, demo)
        page.wait_for_selector("[data-edge='demo'] [data-stat='my-pools']")
        # live, without reloading or re-rendering the page: the section's mark would be gone
        page.evaluate("document.querySelector('.dashboard').dataset.mark = 'kept'")
        before = stat(page, "my-jobs")
        jobs.append(api(demo, "POST", f"/demo/psij/submit_job/{sids['psij']}", json={"job_spec": SLEEPER})["job_id"])
        poll_for(lambda: stat(page, "my-jobs") == before + 1, 25, 0.2, what="the new job counted without a reload")
        api(demo, "POST", f"/demo/pilots/create_pool/{sids['pilots']}",
            json={"name": "dash", "min_size": 1, "max_size": 1, "cores": 1})
        api(demo, "POST", f"/demo/pilots/submit_tasks/{sids['pilots']}?pool=dash", json={"tasks": [SLEEPER] * 12})
        page.wait_for_selector("[data-edge='demo'] tr[data-pool='dash']", timeout=25000)

        def pools_agree() -> bool:
            before, ui, after = (pool_numbers(api(demo, "GET", "/demo/pilots/list_pools")["pools"]),
                                 shown_pools(page), pool_numbers(api(demo, "GET", "/demo/pilots/list_pools")["pools"]))
            return ui.get("pilots-dash") == 1 and ui in (before, after)

        poll_for(pools_agree, 90, 0.5, what=f"the pool's pilot READY on the dashboard (shown: {shown_pools(page)})")
        assert page.get_attribute(".dashboard", "data-mark") == "kept", "the page was reloaded or re-rendered"
        # the pilot's child edge has a card of its own, its tasks counted too (an older edge: by the fallback)
        poll_for(lambda: page.locator("[data-edge^='demo.dash.'] [data-stat='my-tasks']").count() == 1
                 and page.locator(".edge-card .field-error").count() == 0, 30, 0.2, what="the child edge's card")
        seen: list[tuple[dict[str, int], dict[str, int]]] = []

        def equal() -> bool:
            # the simulator moves on between two reads: re-render and compare until both agree
            before, ui, after = api_numbers(demo, sids), shown_numbers(page), api_numbers(demo, sids)
            seen.append((ui, after))
            if ui == before or ui == after:
                return True
            page.goto(demo["url"] + "/#/:jobs")
            page.goto(demo["url"] + "/#/")
            page.wait_for_selector("[data-edge='demo'] [data-stat='my-pools']")
            return False

        poll_for(equal, 60, what=f"the dashboard's numbers to equal the API's (last: {seen[-1:]})")
        ui = seen[-1][0]
        assert ui["sev-CRIT"] >= 1 and ui["my-tasks"] == 2 and ui["my-jobs"] >= 3  # two sleepers and the pilot
        assert (ui["my-pools"], ui["pilots-dash"], ui["max-dash"]) == (1, 1, 1)
        assert 0 < ui["queued-dash"] < 12, "the pilot took some tasks, the others wait"
        assert len([k for k in ui if k.startswith("total-")]) == 2  # cpu and gpu partitions
        assert "CRIT" in page.get_attribute("[data-edge='demo'] .dot", "class")
        # notifications arrive live in "Recent notifications"
        api(demo, "POST", "/demo/simulator/incident", json={"type": "node_down", "target": "c012", "duration": 600})
        page.wait_for_selector(".recent li:has-text('demo/cluster')", timeout=30000)
        assert check_axe(page, "[data-edge='demo']") == []
        doc_shot(page, "dashboard")
        assert page.errors == []
    finally:
        for job_id in jobs:
            api(demo, "POST", f"/demo/psij/cancel_job/{sids['psij']}/{job_id}")
        api(demo, "POST", f"/demo/tasks/cancel_all_tasks/{sids['tasks']}")
        if api(demo, "GET", "/demo/pilots/list_pools")["pools"]:
            api(demo, "POST", f"/demo/pilots/cancel_pool/{sids['pilots']}/dash")
        poll_for(lambda: not api(demo, "GET", "/demo/pilots/list_pools")["pools"], 60, what="the pool gone")
        poll_for(lambda: api(demo, "GET", "/demo/tasks/task_counts")["counts"]["RUNNING"] == 0, 30,
                 what="the sleeping tasks cancelled")


def test_menu_sections_merge_and_items_open_distinct_views(page, demo) -> None:
    sections = api(demo, "GET", "/menu")["sections"]
    ids = [s["id"] for s in sections]
    assert len(ids) == len(set(ids)), f"a section twice: {ids}"
    workload = next(s for s in sections if s["id"] == "workload")
    plugins = {i["plugin"] for i in workload["items"]}
    assert {"psij", "queue_info", "tasks"} <= plugins, "three plugins' Workload sections are one"
    assert sorted(workload["plugins"]) == sorted(plugins)
    login(page, demo)
    assert page.locator("#nav .menu-section[data-section='workload']").count() == 1
    labels = page.locator("#nav .menu-section[data-section='workload'] a span").all_inner_texts()
    assert {"Jobs", "Queues", "Tasks"} <= set(labels) and len(labels) == len(workload["items"])
    hrefs = page.locator("#nav a.menu-item").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert len(hrefs) == sum(len(s["items"]) for s in sections)
    assert len(set(hrefs)) == len(hrefs), f"two menu items open the same view: {hrefs}"
    assert {"#/demo/cluster/rooms", "#/demo/cluster/nodes", "#/demo/cluster/partitions", "#/:jobs",
            "#/:files/demo"} <= set(hrefs)
    page.click("#nav a.menu-item[data-item='jobs']")
    page.wait_for_selector(".jobs-page")
    assert page.get_attribute("#nav a.menu-item[data-item='jobs']", "aria-current") == "page"
    page.click("#nav a.menu-item[data-item='files']")
    page.wait_for_selector(".files-page")
    assert page.errors == []


def test_composer_job_is_live_and_its_output_grows(page, demo) -> None:
    login(page, demo)
    page.goto(demo["url"] + "/#/:jobs")
    page.wait_for_selector(".composer select[name='edge'] option[value='demo']", state="attached")
    page.fill(".composer input[name='name']", "ticker")
    page.fill(".composer input[name='executable']", "/bin/sh")
    page.fill(".composer input[name='arguments']", "-c 'for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 1; done'")
    page.fill(".composer input[name='template-name']", "ticker-template")
    page.click(".composer button:has-text('Save template')")
    page.click(".composer button[type=submit]")
    page.wait_for_selector(".job-detail .detail-state .st-RUNNING", timeout=20000)
    job_id = page.get_attribute("tbody tr.selected", "data-job")
    assert job_id
    row = f"tbody tr[data-job='{job_id}']"
    page.wait_for_selector(f"{row} .st-RUNNING")
    page.wait_for_selector(".job-stdout:has-text('tick1')", timeout=15000)
    early = len(page.inner_text(".job-stdout"))
    page.wait_for_selector(".job-stdout:has-text('tick3')", timeout=15000)
    assert len(page.inner_text(".job-stdout")) > early
    assert page.locator(f"{row} .st-RUNNING").count() == 1, "the output grew while the job ran"
    doc_shot(page, "jobs")
    page.wait_for_selector(f"{row} .st-DONE", timeout=30000)  # from the job_status event
    assert page.inner_text(".job-stdout").split() == [f"tick{i}" for i in range(1, 9)]
    sid = session(demo, "psij")
    assert api(demo, "GET", f"/demo/psij/job_status/{sid}/{job_id}")["state"] == "DONE"
    page.select_option(".toolbar select[name='state']", "FAILED")
    assert page.locator(row).count() == 0
    page.select_option(".toolbar select[name='state']", "DONE")
    assert page.locator(row).count() == 1
    # the template survives a reload (localStorage of this browser)
    page.reload()
    page.wait_for_selector(".composer select[name='template'] option[value='ticker-template']", state="attached")
    page.select_option(".composer select[name='template']", "ticker-template")
    assert page.input_value(".composer input[name='executable']") == "/bin/sh"
    assert page.errors == []


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder for uploads inside the staging sandbox's default roots (/tmp), removed afterwards."""
    made = Path(tempfile.mkdtemp(prefix="isthmus-ui-", dir="/tmp"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def test_upload_50_mb_with_progress_and_download_it_back(page, demo, tmp_path, folder) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(50 * 1024 * 1024))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    login(page, demo)
    page.goto(demo["url"] + "/#/:files/demo")
    page.wait_for_selector(".files-page table")
    page.fill(".files-page input[name='path']", str(folder))
    page.click(".files-page .toolbar button[type=submit]")
    page.wait_for_selector(f".files-page [role=status]:has-text('{folder}')")
    page.evaluate("""() => { window.__progress = []; const bar = document.querySelector('.upload-progress');
        new MutationObserver(() => window.__progress.push(bar.value / bar.max))
          .observe(bar, { attributes: true }); }""")
    page.set_input_files(".upload-form input[type=file]", str(source))
    page.click(".upload-form button[type=submit]")
    page.wait_for_selector(f".checksum-result[data-sha256='{expected}']", timeout=120000)
    steps = page.evaluate("window.__progress")
    assert any(0 < v < 1 for v in steps), f"no intermediate progress was shown: {steps[:10]}"
    assert hashlib.sha256((folder / "big.bin").read_bytes()).hexdigest() == expected
    page.wait_for_selector("tr[data-name='big.bin']")
    assert "50.0 MiB" in page.inner_text("tr[data-name='big.bin']")
    page.click("tr[data-name='big.bin'] button:has-text('Checksum')")
    page.wait_for_selector(f"tr[data-name='big.bin'] td.sha:has-text('{expected}')")
    doc_shot(page, "files")
    with page.expect_download(timeout=120000) as info:
        page.click("tr[data-name='big.bin'] button:has-text('Download')")
    saved = tmp_path / "back.bin"
    info.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == expected
    # mkdir and delete
    page.fill(".files-page input[name='dirname']", "made-here")
    page.click(".files-page button:has-text('Create')")
    page.wait_for_selector("tr[data-name='made-here'][data-type='dir']")
    assert (folder / "made-here").is_dir()
    page.once("dialog", lambda d: d.accept())
    page.click("tr[data-name='big.bin'] button:has-text('Delete')")
    page.wait_for_selector("tr[data-name='big.bin']", state="detached")
    assert not (folder / "big.bin").exists()
    assert page.errors == []


def test_files_page_keeps_the_folder_typed_and_asked_for_last(page, demo) -> None:
    """The page lists `~` as it opens. When that answer comes late, it neither replaces a folder
    typed meanwhile nor one opened meanwhile (it made the upload tests flaky: Open listed ~)."""
    held: list[Any] = []
    late = re.compile(r"/demo/staging/list/.*path=~")
    page.route(late, lambda route: held.append(route))  # each first listing waits for the test
    status, path = ".files-page p[role=status]", ".files-page input[name='path']"

    def settle() -> None:  # the late answer's handler has run
        page.evaluate("() => new Promise(resolve => setTimeout(resolve, 300))")

    def hold(count: int) -> None:  # (Playwright runs route handlers while the test is inside one of its calls)
        poll_for(lambda: page.wait_for_timeout(100) or len(held) == count, 15, 0, what="the page's listing of ~")

    login(page, demo)
    page.goto(demo["url"] + "/#/:files/demo")
    hold(1)
    page.fill(path, "/tmp")  # typed, not yet opened
    with page.expect_response(late) as answer:
        held[0].continue_()
    assert answer.value.ok
    page.wait_for_selector(f"{status}:has-text('demo:')")
    settle()
    assert page.input_value(path) == "/tmp"  # what the user typed is still there
    page.click(".files-page .toolbar button[type=submit]")
    page.wait_for_selector(f"{status}:has-text('demo:/tmp —')")

    page.reload()
    hold(2)
    page.fill(path, "/tmp")
    page.click(".files-page .toolbar button[type=submit]")  # opened before ~'s answer
    page.wait_for_selector(f"{status}:has-text('demo:/tmp —')")
    with page.expect_response(late) as answer:
        held[1].continue_()
    assert answer.value.ok
    settle()
    assert page.inner_text(status).startswith("demo:/tmp —") and page.input_value(path) == "/tmp"
    assert page.errors == []


SLICE = 8 * 1024 * 1024  # the Files page's upload slice (pages/files.js)


def test_upload_resumes_from_what_the_edge_kept(page, demo, tmp_path, folder) -> None:
    """Five slices; the connection breaks 3 MiB into the third (those bytes reach the edge) and stays
    broken through the automatic retries; Resume then sends only the rest, with one more break on
    the way that the page gets over by itself. Every PUT goes through the route handler, which
    records what reached the edge."""
    data = os.urandom(4 * SLICE + 123_457)
    source = tmp_path / "parts.bin"
    source.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    partial, final = folder / ".parts.bin.isthmus-partial", folder / "parts.bin"
    cut = 3 * 1024 * 1024 + 12_345  # what of the third slice arrives before its connection breaks
    kept = 2 * SLICE + cut
    phase = "first"
    sent: dict[str, list[tuple[int, int]]] = {"first": [], "resume": []}  # (offset, bytes) that reached the edge
    broken: dict[str, list[int]] = {"first": [], "resume": []}  # offsets of PUTs whose connection broke
    statuses: list[int] = []

    def handle(route: Any, request: Any) -> None:
        offset = int(parse_qs(urlparse(request.url).query)["offset"][0])
        body = request.post_data_buffer or b""
        if phase == "first" and len(sent["first"]) == 2:  # the third slice: a part arrives, then the break
            headers = {k: v for k, v in request.all_headers().items() if k not in ("content-length", "cookie", "host")}
            statuses.append(route.fetch(post_data=body[:cut], headers=headers).status)
            sent["first"].append((offset, cut))
            broken["first"].append(offset)
            route.abort("connectionreset")
        elif phase == "first" and len(sent["first"]) == 3:  # the edge out of reach: nothing arrives
            broken["first"].append(offset)
            route.abort("connectionreset")
        elif phase == "resume" and len(sent["resume"]) == 1 and not broken["resume"]:  # a blip, once
            broken["resume"].append(offset)
            route.abort("connectionreset")
        else:
            sent[phase].append((offset, len(body)))
            route.continue_()

    login(page, demo)
    page.route(re.compile(r"/demo/staging/upload/"), handle)
    page.goto(demo["url"] + "/#/:files/demo")
    page.wait_for_selector(".files-page table")
    page.fill(".files-page input[name='path']", str(folder))
    page.click(".files-page .toolbar button[type=submit]")
    page.wait_for_selector(f".files-page [role=status]:has-text('{folder}')")
    page.evaluate("""() => { window.__texts = []; const text = document.querySelector('.upload-text');
        new MutationObserver(() => window.__texts.push(text.textContent))
          .observe(text, { childList: true, characterData: true, subtree: true }); }""")
    page.set_input_files(".upload-form input[type=file]", str(source))
    page.click(".upload-form button[type=submit]")

    page.wait_for_selector(".upload-text[data-state='stopped']", timeout=90000)
    assert statuses == [200]  # the 3 MiB of the third slice did reach the edge
    assert partial.stat().st_size == kept and not final.exists()
    # each automatic retry asked the edge where it stood: the third slice's offset plus what arrived
    assert broken["first"] == [2 * SLICE] + [kept] * 3, broken
    texts = page.evaluate("window.__texts")
    assert any(t.startswith("Upload interrupted at 16.0 MiB (the connection broke during the upload); trying again "
                            "in 1 s (1 of 3)") for t in texts), texts
    stopped = page.inner_text(".upload-text")
    assert stopped == ("Upload of parts.bin stopped at 19.0 MiB of 32.1 MiB: the connection broke during the upload. "
                       "The edge keeps the 19.0 MiB it received: press Resume to continue from there."), stopped
    assert page.evaluate("document.querySelector('.upload-progress').value") == kept
    assert page.is_visible("button.resume-upload")
    assert check_axe(page, ".files-page") == []  # the message and the Resume button
    doc_shot(page, "files-resume")

    phase = "resume"
    page.click("button.resume-upload")
    page.wait_for_selector(f".checksum-result[data-sha256='{expected}']", timeout=90000)
    offsets = [o for o, _ in sent["resume"]]
    assert offsets[0] == kept, sent["resume"]  # from the offset the edge had, not from 0
    assert broken["resume"] == [offsets[1]]  # the blip's slice was sent again at the same offset
    ends = [o + n for o, n in sent["resume"]]
    assert ends == [*offsets[1:], len(data)], sent["resume"]  # each slice where the last ended, up to the end
    resumed = sum(n for _, n in sent["resume"])
    assert resumed == len(data) - kept < len(data)  # fewer bytes the second time: only what the edge lacked
    assert sum(n for _, n in sent["first"]) + resumed == len(data)  # no byte reached the edge twice
    assert hashlib.sha256(final.read_bytes()).hexdigest() == expected and not partial.exists()
    assert page.inner_text(".upload-text") == "Uploaded parts.bin: 32.1 MiB"
    assert not page.is_visible("button.resume-upload")
    page.wait_for_selector("tr[data-name='parts.bin']")
    assert check_axe(page, ".files-page") == []  # a file's row: its buttons' names hold their visible text
    assert page.errors == []


def test_axe_finds_no_serious_violations_and_phone_width_fits(browser, demo) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, demo)
        for route, ready in (("#/", "[data-edge='demo'] .stats"), ("#/:jobs", ".jobs-page tbody tr"),
                             ("#/:files/demo", ".files-page tbody tr")):
            for width, height in ((1280, 800), (390, 844)):
                page.set_viewport_size({"width": width, "height": height})
                page.goto(f"{demo['url']}/{route}")
                page.wait_for_selector(ready)
                assert check_axe(page) == [], f"{route} at {width}px"
                overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{route}: horizontal overflow of {overflow}px at {width}px"
            if route == "#/":
                doc_shot(page, "dashboard-phone")
        # keyboard: the nav's page links are reachable with Tab and open their view with Enter
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(demo["url"] + "/#/")
        page.focus("#nav a[href='#/:jobs']")
        page.keyboard.press("Enter")
        page.wait_for_selector(".jobs-page")
        assert errors == []
    finally:
        context.close()


def test_task_throughput_chart_follows_a_batch(page, demo) -> None:
    login(page, demo)
    page.wait_for_selector(".throughput .chart-box canvas")
    sid = session(demo, "tasks")
    uids = api(demo, "POST", f"/demo/tasks/submit_form/{sid}",
               json={"executable": "/bin/true", "arguments": [], "count": 300})["uids"]
    assert len(uids) == 300
    poll_for(lambda: api(demo, "GET", f"/demo/tasks/list_tasks/{sid}?limit=0")["counts"].get("DONE") == 300, 60,
             what="300 tasks done")
    poll_for(lambda: page.get_attribute(".throughput [data-total]", "data-total") == "300", 20,
             what="every finished task counted from the events")
    summary = page.locator(".throughput .ts-summary")
    poll_for(lambda: "samples" in summary.inner_text(), 10, what="the chart's summary")
    doc_shot(page, "throughput")
    assert page.errors == []


def test_menu_merges_across_edges_per_distinct_manifest(tmp_path) -> None:
    """Two edges with the same plugins: one Workload section, each item once with edges == 2;
    a third edge with only tasks adds to the tasks item's count alone."""
    with Stack(plugins=["psij", "tasks"], edge="alpha") as s:
        headers = {"Authorization": f"Bearer {s.admin_token}"}
        env = {**os.environ, "ISTHMUS_EDGE_TOKEN": s.edge_token, "XDG_STATE_HOME": str(tmp_path)}
        others = [subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge", f"ws://127.0.0.1:{s.port}",
                                    "--name", name, "--plugins", ",".join(plugins)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for name, plugins in (("beta", ["psij", "tasks"]), ("gamma", ["tasks"]))]
        try:
            poll_for(lambda: httpx.get(f"{s.url}/edge/list", headers=headers).json()["count"] == 3, 30,
                     what="three edges")
            sections = httpx.get(f"{s.url}/menu", headers=headers).json()["sections"]
            workload = [x for x in sections if x["id"] == "workload"]
            assert len(workload) == 1
            items = {i["id"]: i for i in workload[0]["items"]}
            assert set(items) == {"jobs", "tasks"}
            assert (items["jobs"]["edges"], items["jobs"]["edge"]) == (2, "alpha")
            assert items["tasks"]["edges"] == 3
        finally:
            for proc in others:
                proc.terminate()
                proc.wait(15)
