"""docs/cli.md's pictures: real `isthmus` commands against `isthmus demo`, drawn as a terminal in Chromium.

Each transcript is what the commands printed in this run (checked below before it is drawn), so a
picture in the docs never shows output the CLI no longer gives.
"""

from __future__ import annotations

import html
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
TERMINAL_CSS = ("body{margin:0;background:#1e1f22}"
                "pre{margin:0;padding:18px 22px;color:#e6e6e6;font:15px/1.45 'DejaVu Sans Mono',monospace;"
                "white-space:pre}.prompt{color:#7fd47f}.cmd{color:#ffffff;font-weight:bold}")


class Terminal:
    """Runs `isthmus` as a logged-in user would and keeps a transcript of prompts and output."""

    def __init__(self, demo: dict[str, str], home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
        self.env.update({"XDG_CONFIG_HOME": str(home / "xdg"), "COLUMNS": "110", "NO_COLOR": "1"})
        self.lines: list[str] = []
        login = self.run("login", "--bridge", demo["url"], input=demo["token"], show=False)
        assert login.returncode == 0, login.stderr

    def run(self, *args: str, input: str | None = None, show: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([ISTHMUS, *args], capture_output=True, text=True, env=self.env, timeout=120,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if show:
            shown = shlex.join(args)
            self.lines.append(f'<span class="prompt">$</span> <span class="cmd">isthmus {html.escape(shown)}</span>')
            self.lines.extend(html.escape(line) for line in (done.stdout + done.stderr).rstrip("\n").splitlines())
        return done

    def draw(self, page, name: str) -> Path:
        page.set_viewport_size({"width": 1100, "height": 200})
        page.set_content(f"<!doctype html><style>{TERMINAL_CSS}</style><pre>{chr(10).join(self.lines)}</pre>")
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        path = DOCS_IMG / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_cli_edges_jobs_and_tasks_as_a_user_sees_them(page, demo, tmp_path) -> None:
    term = Terminal(demo, tmp_path)

    edges = term.run("edges", "--health")
    assert edges.returncode == 0, edges.stderr
    assert edges.stdout.split("\n", 1)[0].split()[:2] == ["EDGE", "HOST"]
    assert any(line.split()[0] == "demo" for line in edges.stdout.splitlines()[1:])

    submit = term.run("jobs", "submit", "demo", "--name", "hello", "--", "/bin/sh", "-c",
                      "echo step 1; sleep 1; echo step 2")
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip()
    tail = term.run("jobs", "tail", "demo", job_id, "--follow")
    assert tail.returncode == 0 and tail.stdout == "step 1\nstep 2\n", tail.stderr
    waited = term.run("jobs", "wait", "demo", job_id)
    assert waited.returncode == 0 and waited.stdout.strip() == f"job {job_id} DONE (exit code 0)", waited.stdout
    listed = term.run("jobs", "ls", "demo", "--limit", "5")
    assert listed.returncode == 0 and job_id in listed.stdout and "hello" in listed.stdout
    as_json = json.loads(term.run("jobs", "ls", "demo", "--json", show=False).stdout)
    assert next(j for j in as_json["jobs"] if j["job_id"] == job_id)["state"] == "DONE"
    jobs_png = term.draw(page, "cli-jobs")

    tasks = Terminal(demo, tmp_path / "tasks")
    ran = tasks.run("tasks", "run", "demo", "--count", "200", "--", "/bin/true")
    assert ran.returncode == 0, ran.stderr
    assert "200 task(s) on demo: 200 DONE" in ran.stdout + ran.stderr
    events = tasks.run("events", "--edge", "demo", "--topic", "job_status")
    assert events.returncode == 0, events.stderr
    assert f'demo/psij  job_status  {{"job_id":"{job_id}","state":"DONE"' in events.stdout
    tasks_png = tasks.draw(page, "cli-tasks")

    for path in (jobs_png, tasks_png):
        width, height = png_size(path)
        assert width >= 1000 and height >= 100, (path, width, height)
