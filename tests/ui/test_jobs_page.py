"""The Jobs page's edge filter, Cancel (in a row and in the detail) and Resubmit… in a real chromium,
against a bridge with two edges that run psij (jobs run on PSI/J's local executor)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from isthmus.plugins.psij.client import PsijClient
from isthmus.testing.stack import Stack, poll_for
from tests.ui.conftest import login

CONFIG = {"scheduler": "none", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]}}}
# quotes and a double space: Resubmit must hand the edge back this very argument list
SCRIPT = "printf '%s|' \"it's\" 'two  words'; sleep 300"
ATTRIBUTES = {"queue_name": "q1", "node_count": 1, "duration": 240}


def rows(page: Any) -> list[tuple[str, str]]:
    """(edge, job id) of each job row on screen."""
    return [(r.get_attribute("data-edge") or "", r.get_attribute("data-job") or "")
            for r in page.query_selector_all(".jobs-page tbody tr[data-job]")]


def test_edge_filter_cancel_and_resubmit(page, tmp_path: Path) -> None:
    with Stack(plugins=["psij"], edge="alpha", config=CONFIG, workdir=tmp_path / "alpha") as s:
        env = {**os.environ, "ISTHMUS_EDGE_TOKEN": s.edge_token, "XDG_STATE_HOME": str(tmp_path / "beta")}
        (tmp_path / "beta.yaml").write_text(yaml.safe_dump(CONFIG))
        beta_proc = subprocess.Popen([sys.executable, "-m", "isthmus", "edge", "--bridge", f"ws://127.0.0.1:{s.port}",
                                      "--name", "beta", "--plugins", "psij", "--config", str(tmp_path / "beta.yaml")],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started: list[tuple[PsijClient, str]] = []  # cancelled at the end, whatever happened
        try:
            poll_for(lambda: httpx.get(f"{s.url}/edge/list", headers=s.headers).json()["count"] == 2, 30,
                     what="edges alpha and beta")
            alpha, beta = (s.client().get_edge_client(edge).get_plugin("psij", PsijClient)
                           for edge in ("alpha", "beta"))
            shown = alpha.submit_job({"executable": "/bin/sh", "arguments": ["-c", SCRIPT], "name": "quoted",
                                      "attributes": ATTRIBUTES}, executor="local")
            doomed = beta.submit_job({"executable": "/bin/sleep", "arguments": ["300"]}, executor="local")
            started += [(alpha, shown), (beta, doomed)]
            for client, job_id in ((alpha, shown), (beta, doomed)):
                poll_for(lambda c=client, j=job_id: c.get_job_status(j)["state"] == "RUNNING", 30, 0.2,
                         what=f"job {job_id} running")

            login(page, {"url": s.url, "token": s.admin_token})
            page.goto(s.url + "/#/:jobs")
            page.wait_for_selector(f"tr[data-job='{doomed}'] .st-RUNNING")
            page.wait_for_selector(f"tr[data-job='{shown}'] .st-RUNNING")
            assert sorted(rows(page)) == [("alpha", shown), ("beta", doomed)]

            # the edge filter shows one edge's jobs, and the composer follows it
            toolbar = ".jobs-page > form.toolbar select[name='edge']"
            page.select_option(toolbar, "beta")
            poll_for(lambda: rows(page) == [("beta", doomed)], 10, 0.1, what="beta's job alone")
            assert page.input_value(".composer select[name='edge']") == "beta"
            page.select_option(toolbar, "alpha")
            poll_for(lambda: rows(page) == [("alpha", shown)], 10, 0.1, what="alpha's job alone")
            page.select_option(toolbar, "")
            poll_for(lambda: len(rows(page)) == 2, 10, 0.1, what="both jobs again")

            # Cancel in a row: the edge cancels it, and the row turns CANCELLED from the event
            page.click(f"tr[data-job='{doomed}'] button[aria-label='Cancel job {doomed}']")
            page.wait_for_selector(f"tr[data-job='{doomed}'] .st-CANCELLED", timeout=30000)
            assert beta.get_job_status(doomed)["state"] == "CANCELLED"
            assert page.locator(f"tr[data-job='{doomed}'] button.danger").count() == 0, "no Cancel on a final job"
            assert alpha.get_job_status(shown)["state"] == "RUNNING", "the other job is untouched"

            # Resubmit… fills the composer with the job as the edge took it; submitting makes a twin
            page.click(f"tr[data-job='{shown}'] button[aria-label='Show job {shown}']")
            page.wait_for_selector(".job-stdout:has-text('two  words|')", timeout=15000)
            page.click(".job-detail button:has-text('Resubmit')")
            assert page.input_value(".composer select[name='edge']") == "alpha"
            assert page.input_value(".composer input[name='name']") == "quoted"
            assert page.input_value(".composer input[name='queue']") == "q1"
            assert page.input_value(".composer input[name='nodes']") == "1"
            assert page.input_value(".composer input[name='duration']") == "240"
            assert page.input_value(".composer select[name='executor']") == "local"
            page.click(".composer button[type=submit]")
            poll_for(lambda: page.get_attribute("tbody tr.selected", "data-job") not in (None, shown), 15, 0.1,
                     what="the resubmitted job selected")
            twin = page.get_attribute("tbody tr.selected", "data-job")
            assert twin
            started.append((alpha, twin))
            original, copy = alpha.get_job_status(shown), alpha.get_job_status(twin)
            assert copy["arguments"] == original["arguments"] == ["-c", SCRIPT]
            assert (copy["executable"], copy["executor"], copy["name"]) == \
                (original["executable"], original["executor"], "quoted")
            assert copy["attributes"] == original["attributes"]
            page.wait_for_selector(".job-stdout:has-text(\"it's|two  words|\")", timeout=30000)

            # Cancel job in the detail panel
            page.wait_for_selector(".job-detail .detail-state .st-RUNNING", timeout=20000)
            page.click(".job-detail button:has-text('Cancel job')")
            page.wait_for_selector(f"tr[data-job='{twin}'] .st-CANCELLED", timeout=30000)
            poll_for(lambda: alpha.get_job_status(twin)["state"] == "CANCELLED", 10, 0.2, what="the twin cancelled")
            alpha.cancel_job(shown)
            page.wait_for_selector(f"tr[data-job='{shown}'] .st-CANCELLED", timeout=30000)
            assert page.errors == []
        finally:
            for client, job_id in started:
                with contextlib.suppress(Exception):
                    client.cancel_job(job_id)
            beta_proc.terminate()
            beta_proc.wait(15)
