"""Plugin.edge_calls on the bridge (bridge/local_calls.py), against real bridge-hosted plugins.

The bridge runs in process with `staging` and `tasks` hosted on it (edge name `bridge`): the
calls travel the same frames over the in-memory link as a proxied client request would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from isthmus.bridge.app import Bridge, BridgeSettings
from isthmus.bridge.auth import TokenStore
from isthmus.bridge.local_calls import LocalEdgeCalls
from isthmus.config import AppConfig
from isthmus.sdk.calls import EdgeCallError
from isthmus.types import Principal, Role, current_principal

ALICE = Principal("alice", Role.user, "id-alice")
BOB = Principal("bob", Role.user, "id-bob")


async def with_bridge(tmp_path: Path, test: object) -> None:
    root = tmp_path / "files"
    root.mkdir()
    config = AppConfig(state_dir=tmp_path / "state", plugins={"staging": {"roots": [str(root)]}})
    bridge = Bridge(BridgeSettings(request_timeout=5.0), TokenStore(None, admin_token="ist_x"), config,
                    plugins=["staging", "tasks"])
    await bridge.startup()
    try:
        calls = bridge.local.edge_calls if bridge.local is not None else None
        assert isinstance(calls, LocalEdgeCalls)
        plugin = bridge.local.records["staging"].plugin  # type: ignore[union-attr]
        assert plugin is not None and plugin.edge_calls is calls  # the documented property
        await test(calls, root)  # type: ignore[operator]
    finally:
        await bridge.shutdown()


def run(tmp_path: Path, test: object) -> None:
    asyncio.run(with_bridge(tmp_path, test))


def test_streams_both_ways_as_the_given_principal(tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # over the inline limit: streamed in chunks with credit

    async def test(calls: LocalEdgeCalls, root: Path) -> None:
        sid = (await calls.call("bridge", "POST", "/staging/register_session", principal=ALICE))["sid"]
        target = str(root / "blob.bin")

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 300_000):
                yield payload[start:start + 300_000]

        up = await calls.request("bridge", "PUT", f"/staging/upload/{sid}", content=pieces(), principal=ALICE,
                                 params={"path": target, "offset": "0"})
        async with up:
            await up.raise_for_status()
            assert (await up.json())["partial_size"] == len(payload)
        digest = hashlib.sha256(payload).hexdigest()
        await calls.call("bridge", "POST", f"/staging/commit/{sid}", principal=ALICE,
                         json={"path": target, "size": len(payload), "sha256": digest})
        down = await calls.request("bridge", "GET", f"/staging/download/{sid}", params={"path": target},
                                   principal=ALICE)
        sizes = [len(chunk) async for chunk in down.aiter_bytes()]
        assert down.status == 200 and sum(sizes) == len(payload) and max(sizes) <= 1024 * 1024
        assert len(sizes) > 1  # it came in pieces, never as one buffer
        # the principal is the one given: bob does not see alice's file
        bob_sid = (await calls.call("bridge", "POST", "/staging/register_session", principal=BOB))["sid"]
        with pytest.raises(EdgeCallError) as info:
            await calls.call("bridge", "GET", f"/staging/checksum/{bob_sid}", params={"path": target}, principal=BOB)
        assert info.value.status_code == 404
        # and the principal of the request being served is the default
        token = current_principal.set(ALICE)
        try:
            answer = await calls.call("bridge", "GET", f"/staging/checksum/{sid}", params={"path": target})
        finally:
            current_principal.reset(token)
        assert answer["sha256"] == digest

    run(tmp_path, test)


def test_refusals_say_what_is_wrong(tmp_path: Path) -> None:
    async def test(calls: LocalEdgeCalls, root: Path) -> None:
        with pytest.raises(EdgeCallError) as info:
            await calls.call("bridge", "GET", "/staging/version")
        assert info.value.status_code == 401 and "principal" in str(info.value)
        with pytest.raises(EdgeCallError) as info:
            await calls.call("hpc9", "GET", "/psij/version", principal=ALICE)
        assert info.value.status_code == 404 and "hpc9" in str(info.value)
        with pytest.raises(EdgeCallError) as info:
            await calls.call("bridge", "GET", "/nothing/here", principal=ALICE)
        assert info.value.status_code == 404

    run(tmp_path, test)


def test_the_deadline_ends_a_call_with_504(tmp_path: Path) -> None:
    async def test(calls: LocalEdgeCalls, root: Path) -> None:
        sid = (await calls.call("bridge", "POST", "/tasks/register_session", principal=ALICE))["sid"]
        uids = (await calls.call("bridge", "POST", f"/tasks/submit_tasks/{sid}", principal=ALICE,
                                 json={"tasks": [{"executable": "/bin/sleep", "arguments": ["30"]}]}))["uids"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(EdgeCallError) as info:  # a long poll of 20 s, cut at 0.5 s
            await calls.call("bridge", "POST", f"/tasks/wait_tasks/{sid}", json={"uids": uids, "timeout": 20},
                             principal=ALICE, timeout=0.5)
        assert info.value.status_code == 504 and loop.time() - started < 5
        await calls.call("bridge", "POST", f"/tasks/cancel_all_tasks/{sid}", principal=ALICE)

    run(tmp_path, test)
