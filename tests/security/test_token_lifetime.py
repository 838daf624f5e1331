"""API tokens that expire and say when they were last used, against a real bridge process.

A token made with ``isthmus token create --expires`` works until its time, is refused from
then on without a restart, and what it opened (an event stream, an edge link) is closed as
for a revocation; the bridge records each token's last use and ``isthmus token list`` shows it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from isthmus.bridge.auth import (
    TokenStore,
    create_token,
    parse_lifetime,
    read_last_used,
    relative_time,
    used_path,
)
from isthmus.cli import app
from isthmus.testing.stack import Stack, poll_for
from isthmus.wire import protocol as P

from .fake_edge import FakeEdge

LIFETIME = 6  # seconds: long enough to open a stream and enrol an edge first


def cli(*args: str, ok: bool = True) -> Any:
    result = CliRunner().invoke(app, ["token", *args], env={"ISTHMUS_REDIS": ""})
    if ok:
        assert result.exit_code == 0, result.output
    return result


def listed(tokens_file: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(cli("list", "--json", "--tokens-file", str(tokens_file)).stdout)
    return {row["id"]: row for row in doc["tokens"]}


def created_id(result: Any) -> str:
    return str(result.stderr.split()[1])  # "created tok_... (role...) in ..."


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(plugins=["sysinfo"], workdir=tmp_path) as s:
        yield s


def open_stream(stack: Stack, token: str, lines: list[str], done: threading.Event) -> None:
    def run() -> None:
        try:
            with httpx.stream("GET", f"{stack.url}/events", headers={"Authorization": f"Bearer {token}"},
                              timeout=httpx.Timeout(30, read=30)) as r:
                for line in r.iter_lines():
                    lines.append(line)
        except httpx.HTTPError as exc:
            lines.append(f"ERROR {exc}")
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    poll_for(lambda: any(line.startswith(": connected") for line in lines), 10, what="event stream open")


def test_an_expiring_token_is_refused_from_its_time_and_what_it_opened_is_closed(stack: Stack) -> None:
    tokens_file = stack.tokens_file
    idle_id = created_id(cli("create", "--role", "viewer", "--tokens-file", str(tokens_file)))
    edge_made = cli("create", "--role", "edge", "--edge", "brief", "--expires", f"{LIFETIME}s",
                    "--tokens-file", str(tokens_file))
    edge_token, edge_id = edge_made.stdout.strip(), created_id(edge_made)
    made = cli("create", "--role", "user", "--name", "temp", "--expires", f"{LIFETIME}s",
               "--tokens-file", str(tokens_file))  # last: once the bridge takes it, it has them all
    token, token_id = made.stdout.strip(), created_id(made)
    expires = listed(tokens_file)[token_id]["expires"]

    with stack.http(token, timeout=5) as http:
        poll_for(lambda: http.get("/edge/list").status_code == 200, 5, what="the new token accepted")
        lines: list[str] = []
        done = threading.Event()
        open_stream(stack, token, lines, done)
        edge = FakeEdge(stack.url, "brief", edge_token)
        assert edge.first["t"] == P.WELCOME, edge.first
        assert "brief" in http.get("/edge/list").json()["edges"]
        assert time.time() < expires

        calls: list[tuple[float, int]] = []  # (when sent, status)

        def refused() -> bool:
            sent = time.time()
            calls.append((sent, http.get("/edge/list").status_code))
            return calls[-1][1] == 401

        poll_for(refused, LIFETIME + 5, interval=0.05, what="the expired token refused")
        assert all(status == 200 for sent, status in calls[:-1])
        assert calls[-1][0] - expires < 1.0, "refused later than the first call after its expiry"
        assert all(sent < expires for sent, status in calls if status == 200)  # never accepted late
        assert done.wait(3), "the event stream of an expired token stayed open"
        assert any("expired" in line or "revoked" in line for line in lines), lines[-5:]
        assert edge.closed(3), "the link of an edge enrolled with an expired token stayed open"
    with stack.http() as admin:
        assert "brief" not in admin.get("/edge/list").json()["edges"]
        assert admin.get("/edge/list").status_code == 200  # other tokens are untouched
    refused_edge = FakeEdge(stack.url, "brief", edge_token)  # nor may it enrol again
    assert refused_edge.first["t"] == P.REFUSE and "not valid" in str(refused_edge.first.get("reason"))
    refused_edge.close()

    stack.close()  # the bridge writes the last-used times it has not written yet when it stops
    rows = listed(tokens_file)
    assert rows[token_id]["state"] == "expired" and rows[edge_id]["state"] == "expired"
    assert rows[idle_id]["state"] == "active" and rows[idle_id]["expires"] is None
    assert rows[idle_id]["last_used"] is None
    for used in (rows[token_id]["last_used"], rows[edge_id]["last_used"]):
        assert used is not None and rows[token_id]["created"] - 1 <= used <= expires
    assert used_path(tokens_file).stat().st_mode & 0o777 == 0o600
    table = cli("list", "--tokens-file", str(tokens_file)).stdout
    assert table.splitlines()[0].split() == ["ID", "ROLE", "NAME", "STATE", "EXPIRES", "LAST", "USED", "FOR"]
    temp_line = next(line for line in table.splitlines() if line.startswith(token_id))
    assert "expired" in temp_line and ("ago" in temp_line or "just now" in temp_line)


def test_last_used_is_written_periodically_only_when_it_changed(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "tokens.json"
    token, entry = create_token(path, "user")

    async def run() -> None:
        store = TokenStore(path, flush_every=0.05)
        await store.start()
        try:
            await asyncio.sleep(0.2)
            assert not used_path(path).exists()  # nothing used: nothing written
            assert store.client(token) is not None
            began = time.monotonic()
            while entry["id"] not in read_last_used(used_path(path)):
                assert time.monotonic() - began < 3, "the last use was not written"
                await asyncio.sleep(0.02)
            stamp = used_path(path).stat().st_mtime_ns
            assert store.client(token) is not None  # within the same minute: nothing new to write
            await asyncio.sleep(0.3)
            assert used_path(path).stat().st_mtime_ns == stamp
        finally:
            await store.stop()

    asyncio.run(run())
    assert path.read_text().count(entry["id"]) == 1  # the token file itself is never rewritten
    assert abs(read_last_used(used_path(path))[entry["id"]] - time.time()) < 5


@pytest.mark.parametrize("text", ["30", "1x", "3.5h", "-2d", "0s", "d", "", "12 hours", "99999w"])
def test_bad_lifetimes_are_refused_with_a_message_that_says_what_to_give(text: str, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    result = cli("create", "--role", "user", "--expires", text, "--tokens-file", str(tokens_file), ok=False)
    assert result.exit_code == 2
    assert "--expires" in result.stderr and ("30d" in result.stderr or "0" in result.stderr), result.stderr
    assert not tokens_file.exists()


def test_lifetimes_and_roles_the_cli_takes(tmp_path: Path) -> None:
    assert [parse_lifetime(t) for t in ("30d", "12h", "90m", "3600s", "2w")] == [
        30 * 86400, 12 * 3600, 90 * 60, 3600, 14 * 86400]
    tokens_file = tmp_path / "tokens.json"
    made = cli("create", "--role", "metrics", "--expires", "30d", "--tokens-file", str(tokens_file))
    row = listed(tokens_file)[created_id(made)]
    assert row["role"] == "metrics" and row["state"] == "active"
    assert abs(row["expires"] - (time.time() + 30 * 86400)) < 5
    assert f"{made.stdout.strip()}" not in tokens_file.read_text()  # only its digest is kept
    table = cli("list", "--tokens-file", str(tokens_file)).stdout
    assert "in 29d" in table and "never" in table
    result = cli("create", "--role", "root", "--tokens-file", str(tokens_file), ok=False)
    assert result.exit_code == 2 and "metrics" in result.stderr and "'root'" in result.stderr
    assert relative_time(None, 0) == "never" and relative_time(100, 280) == "3m ago"
    assert relative_time(2 * 86400 + 7, 0) == "in 2d" and relative_time(10, 30) == "just now"


def test_a_revocation_a_request_noticed_first_is_still_enforced(tmp_path: Path) -> None:
    """The bridge closes streams when ``refresh()`` says so, even if a request re-read the file first."""
    from isthmus.bridge.auth import revoke_token

    path = tmp_path / "tokens.json"
    token, entry = create_token(path, "user")
    store = TokenStore(path)
    assert store.client(token) is not None and not store.refresh()
    revoke_token(path, entry["id"])
    poll_for(lambda: store.client(token) is None, 3, what="the revocation seen by a lookup")
    assert store.refresh() and not store.refresh()
