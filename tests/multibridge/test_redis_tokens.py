"""Tokens shared through Redis: made once, seen by every bridge, revoked everywhere within a second,
expired everywhere at their time, and last used as the latest of what every bridge saw.

Two RedisTokenStores on one real redis-server are two bridges; the CLI functions are called
as ``isthmus token ... --redis URL`` would call them.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from isthmus.bridge import redis_tokens
from isthmus.bridge.auth import TokenStore, create_token, digest, read_entries, revoke_token
from isthmus.bridge.redis_tokens import RedisTokenStore, open_token_store
from isthmus.cli import app
from isthmus.testing.redis import RedisServer
from isthmus.types import Role
from tests.multibridge.conftest import eventually


@asynccontextmanager
async def stores(url: str, *paths: Path | None, **kwargs: Any) -> AsyncIterator[list[RedisTokenStore]]:
    made = [RedisTokenStore(path, redis_url=url, **kwargs) for path in paths]
    for store in made:
        await store.start()
    try:
        yield made
    finally:
        for store in made:
            await store.stop()


until = functools.partial(eventually, timeout=5.0)


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, ["token", *args], env={"ISTHMUS_REDIS": ""})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.asyncio
async def test_a_token_made_with_the_cli_works_on_every_bridge_and_its_revocation_too(
        url: str, tmp_path: Path) -> None:
    async with stores(url, None, tmp_path / "b.json") as (a, b):
        token = cli("create", "--role", "user", "--name", "alice", "--redis", url).strip()
        key = digest(token)
        await until(lambda: a.client_by_digest(key) is not None and b.client_by_digest(key) is not None,
                    timeout=1.0)
        principal = b.client(token)
        assert principal is not None and principal.role is Role.user and a.client(token) == principal
        a.refresh()
        b.refresh()
        [listed] = json.loads(cli("list", "--json", "--redis", url))["tokens"]
        token_id = listed["id"]
        assert (listed["role"], listed["name"], listed["state"]) == ("user", "alice", "active")
        assert not (tmp_path / "b.json").exists()  # the file was not touched

        cli("revoke", token_id, "--redis", url)
        noticed: set[int] = set()

        def both() -> bool:  # refresh() is True once: note each store's
            noticed.update(i for i, store in enumerate((a, b)) if store.refresh())
            return len(noticed) == 2

        took = await until(both, timeout=1.0)
        assert took < 1.0
        assert a.client_by_digest(key) is None and b.client_by_digest(key) is None
        assert not a.refresh() and not b.refresh()  # True once per change
        assert "revoked" in cli("list", "--redis", url)
        assert a.healthy and a.problem is None


@pytest.mark.asyncio
async def test_edge_tokens_and_env_tokens(url: str) -> None:
    token, _entry = redis_tokens.create_token(url, "edge", edge="hpc*")
    async with stores(url, None, admin_token="ist_admin_a") as (a,):
        b = RedisTokenStore(None, redis_url=url, edge_token="ist_edge_b")
        await b.start()
        try:
            assert a.edge_allowed(token, "hpc1") and not a.edge_allowed(token, "other")
            assert b.edge_allowed_digest(digest(token), "hpc7")
            assert a.client("ist_admin_a") is not None and b.client("ist_admin_a") is None  # env: local
            assert b.edge_allowed("ist_edge_b", "x") and not a.edge_allowed("ist_edge_b", "x")
            assert a.has_client_tokens and a.has_edge_tokens and not b.has_client_tokens
        finally:
            await b.stop()


@pytest.mark.asyncio
async def test_a_bridges_token_file_is_merged_without_undoing_revocations(url: str, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    kept, kept_entry = create_token(path, "admin")
    gone, gone_entry = create_token(path, "viewer")
    revoke_token(path, gone_entry["id"])
    shared, shared_entry = redis_tokens.create_token(url, "user")
    async with stores(url, None) as (other,):
        assert other.client(shared) is not None
        # The same id, active in a stale copy of the file but revoked in Redis: stays revoked.
        redis_tokens.revoke_token(url, shared_entry["id"])
        stale = [*read_entries(path), shared_entry]
        path.write_text(json.dumps({"tokens": stale}))
        async with stores(url, path) as (bridge,):
            for store in (bridge, other):
                await until(lambda store=store: store.client(kept) is not None)
                assert store.client(gone) is None and store.client(shared) is None
        by_id = {e["id"]: e for e in redis_tokens.read_entries(url)}
        assert set(by_id) == {kept_entry["id"], gone_entry["id"], shared_entry["id"]}
        assert by_id[gone_entry["id"]]["revoked"] and by_id[shared_entry["id"]]["revoked"]
        assert not by_id[kept_entry["id"]].get("revoked")

        # Created in the file later (no --redis) on a bridge's host: merged while it runs.
        async with stores(url, path) as (bridge,):
            late, _ = create_token(path, "user")
            await until(lambda: other.client(late) is not None, timeout=3.0)


@pytest.mark.asyncio
async def test_lookups_go_on_while_redis_is_down_and_a_lost_store_is_restored(tmp_path: Path) -> None:
    with RedisServer() as r:
        token, entry = redis_tokens.create_token(r.url, "admin")
        revoked, revoked_entry = redis_tokens.create_token(r.url, "user")
        redis_tokens.revoke_token(r.url, revoked_entry["id"])
        async with stores(r.url, None, None, poll=0.05) as (a, b):
            assert a.client(token) is not None and a.client(revoked) is None
            r.stop()
            await until(lambda: not a.healthy and not b.healthy)
            assert a.problem is not None and "Redis" in a.problem
            assert a.client(token) is not None and b.client(token) is not None  # the last tokens loaded
            assert a.client(revoked) is None
            r.start()  # without its data
            await until(lambda: a.healthy and b.healthy, timeout=10)
            by_id = {e["id"]: e for e in redis_tokens.read_entries(r.url)}
            assert by_id[entry["id"]].get("revoked") is None and by_id[revoked_entry["id"]]["revoked"]
            assert a.client(token) is not None and b.client(revoked) is None


@pytest.mark.asyncio
async def test_a_bridge_that_starts_while_redis_is_down_serves_its_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, _ = create_token(path, "user")
    r = RedisServer()  # not started yet
    store = open_token_store(path, redis_url=r.url)
    assert isinstance(store, RedisTokenStore)
    try:
        await store.start()
        assert not store.healthy and store.client(token) is not None
        r.start()
        await until(lambda: store.healthy, timeout=10)
        assert [e["hash"] for e in redis_tokens.read_entries(r.url)] == [digest(token)]
        assert store.client(token) is not None
    finally:
        await store.stop()
        r.__exit__(None, None, None)


def test_without_redis_the_store_is_the_file_store(tmp_path: Path) -> None:
    store = open_token_store(tmp_path / "tokens.json")
    assert type(store) is TokenStore and store.healthy and store.problem is None


def test_cli_without_a_store_reports_it_and_revoking_an_unknown_id_fails(url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["token", "revoke", "tok_nope", "--redis", url])
    assert result.exit_code == 1 and "no token tok_nope" in result.output
    result = runner.invoke(app, ["token", "list", "--redis", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1 and "unreachable" in result.output
    result = runner.invoke(app, ["token", "list"], env={"ISTHMUS_REDIS": url})
    assert result.exit_code == 0
    assert "--redis" in runner.invoke(app, ["token", "create", "--help"]).output


@pytest.mark.asyncio
async def test_an_expiring_token_stops_working_on_every_bridge_at_once(url: str) -> None:
    client_token = cli("create", "--role", "viewer", "--expires", "3s", "--redis", url).strip()
    edge_token, _ = redis_tokens.create_token(url, "edge", edge="hpc*", lifetime=3)
    lasting, _ = redis_tokens.create_token(url, "user")
    async with stores(url, None, None) as (a, b):
        for store in (a, b):
            assert store.client(client_token) is not None and store.edge_allowed(edge_token, "hpc1")
            assert not store.refresh()
        [listed] = [t for t in json.loads(cli("list", "--json", "--redis", url))["tokens"]
                    if t["role"] == "viewer"]
        assert listed["state"] == "active" and 0 < listed["expires"] - time.time() <= 3

        noticed: set[int] = set()

        def both() -> bool:  # no change in Redis: each store's own clock says so, once
            noticed.update(i for i, store in enumerate((a, b)) if store.refresh())
            return len(noticed) == 2

        await until(both, timeout=5.0)
        for store in (a, b):
            assert store.client(client_token) is None
            assert not store.edge_allowed(edge_token, "hpc1")
            assert not store.edge_allowed_digest(digest(edge_token), "hpc1")
            assert store.client(lasting) is not None
            assert not store.refresh()  # once per expiry
        states = {t["role"]: t["state"] for t in json.loads(cli("list", "--json", "--redis", url))["tokens"]}
        assert states == {"viewer": "expired", "edge": "expired", "user": "active"}
        assert "expired" in cli("list", "--redis", url)


@pytest.mark.asyncio
async def test_last_used_is_recorded_in_redis_by_every_bridge_and_the_later_time_wins(url: str) -> None:
    user, user_entry = redis_tokens.create_token(url, "user")
    edge, edge_entry = redis_tokens.create_token(url, "edge")
    _idle, idle_entry = redis_tokens.create_token(url, "viewer")
    before = int(time.time())
    async with stores(url, None, None, flush_every=0.1) as (a, b):
        assert a.client(user) is not None and b.edge_allowed(edge, "hpc1")
        await until(lambda: len(redis_tokens.read_last_used(url)) == 2, timeout=3.0)
        used = redis_tokens.read_last_used(url)
        assert set(used) == {user_entry["id"], edge_entry["id"]}
        assert all(before <= t <= time.time() for t in used.values())

        # A bridge that saw an older use never moves a newer time back.
        later = int(time.time()) + 1000
        with redis.Redis.from_url(url) as db:
            db.hset(redis_tokens.USED, user_entry["id"], later)
        assert b.client(user) is not None
        await b.flush_used()
        assert redis_tokens.read_last_used(url)[user_entry["id"]] == later

    rows = {t["id"]: t for t in json.loads(cli("list", "--json", "--redis", url))["tokens"]}
    assert rows[user_entry["id"]]["last_used"] == later and rows[idle_entry["id"]]["last_used"] is None
    assert rows[edge_entry["id"]]["last_used"] == used[edge_entry["id"]]
    table = cli("list", "--redis", url)
    assert "LAST USED" in table and ("ago" in table or "just now" in table)


@pytest.mark.asyncio
async def test_stopping_a_bridge_writes_the_uses_it_has_not_written_yet(url: str) -> None:
    token, entry = redis_tokens.create_token(url, "admin")
    async with stores(url, None, flush_every=3600) as (a,):
        assert a.client(token) is not None
        assert redis_tokens.read_last_used(url) == {}  # not before the flush
    assert entry["id"] in redis_tokens.read_last_used(url)
