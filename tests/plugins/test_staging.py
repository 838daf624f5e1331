"""Staging: sandbox rules in process; transfers of every size through real bridge and edge processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from isthmus import ClientError
from isthmus.plugins.staging.config import StagingConfig
from isthmus.plugins.staging.owners import OwnerStore
from isthmus.plugins.staging.plugin import PluginStaging, partial_of
from isthmus.plugins.staging.sandbox import names_directory
from isthmus.testing.stack import Stack, poll_for


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(1 << 22):
            h.update(data)
    return h.hexdigest()


def make_file(path: Path, size: int) -> Path:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
    return path


@pytest.fixture
def local(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("top secret")
    monkeypatch.setenv("ISTHMUS_PLUGINS__STAGING__ROOTS", f"[{root}]")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = FastAPI()
    PluginStaging.config_model  # noqa: B018 - config comes from the env only inside a host; set it here
    plugin = PluginStaging(app)
    plugin.config = StagingConfig(roots=[str(root)], state_dir=str(tmp_path / "state" / "staging"))
    plugin.sandbox = plugin._sandbox(plugin.config)
    client = TestClient(app)
    sid = client.post("/staging/register_session").json()["sid"]
    yield client, sid, root, outside
    asyncio.run(plugin.on_shutdown())


def upload(client, sid, path, data: bytes, overwrite=False, offset=0):
    return client.put(f"/staging/upload/{sid}", params={"path": str(path), "offset": offset,
                                                        "overwrite": str(overwrite).lower()}, content=data)


def commit(client, sid, path, data: bytes, overwrite=False):
    return client.post(f"/staging/commit/{sid}", json={"path": str(path), "size": len(data),
                                                       "sha256": hashlib.sha256(data).hexdigest(),
                                                       "overwrite": overwrite})


def test_sandbox_refusals(local) -> None:
    client, sid, root, outside = local
    (root / "link").symlink_to(outside / "secret")
    (root / "dirlink").symlink_to(outside)
    (root / ".ssh").mkdir()
    (root / ".ssh" / "id_rsa").write_text("key")
    cases = {
        f"{root}/../outside/secret": "'..'",
        str(outside / "secret"): "outside the allowed roots",
        str(root / "link"): "symbolic link",
        str(root / "dirlink" / "secret"): "outside the allowed roots",
        str(root / ".ssh" / "id_rsa"): "hidden entries",
        "/dev/null": "outside the allowed roots",
    }
    for path, message in cases.items():
        resp = client.get(f"/staging/download/{sid}", params={"path": path})
        assert resp.status_code == 403 and message in resp.json()["detail"], (path, resp.text)
    assert upload(client, sid, root / "link", b"x", overwrite=True).status_code in (403, 200)
    assert (outside / "secret").read_text() == "top secret"
    os.mkfifo(root / "fifo")
    resp = client.get(f"/staging/download/{sid}", params={"path": str(root / "fifo")})
    assert resp.status_code == 403 and "not a regular file" in resp.json()["detail"]
    listing = client.get(f"/staging/list/{sid}", params={"path": str(root)}).json()
    assert ".ssh" not in {e["name"] for e in listing["entries"]}


def test_symlink_swapped_in_for_the_partial_is_refused(local) -> None:
    client, sid, root, outside = local
    partial_of(root / "target").symlink_to(outside / "secret")
    resp = upload(client, sid, root / "target", b"data", offset=10)  # resume into the "partial"
    assert resp.status_code in (403, 409)
    assert (outside / "secret").read_text() == "top secret"


def test_small_files_overwrite_and_atomic_commit(local) -> None:
    client, sid, root, _ = local
    for size in (0, 1, 3 * 1024 * 1024 + 5):
        data = os.urandom(size)
        dest = root / f"f{size}"
        assert upload(client, sid, dest, data).json()["partial_size"] == size
        assert not dest.exists(), "nothing at the destination before commit"
        assert commit(client, sid, dest, data).json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert dest.read_bytes() == data and not partial_of(dest).exists()
        got = client.get(f"/staging/download/{sid}", params={"path": str(dest)})
        assert got.content == data
    refused = upload(client, sid, root / "f1", b"new")
    assert refused.status_code == 409 and "overwrite" in refused.json()["detail"]
    assert upload(client, sid, root / "f1", b"new", overwrite=True).status_code == 200
    assert commit(client, sid, root / "f1", b"new", overwrite=True).status_code == 200
    assert (root / "f1").read_bytes() == b"new"


def test_bad_checksum_keeps_partial_and_destination_empty(local) -> None:
    client, sid, root, _ = local
    dest = root / "x.bin"
    upload(client, sid, dest, b"abc")
    bad = client.post(f"/staging/commit/{sid}", json={"path": str(dest), "size": 3, "sha256": "0" * 64})
    assert bad.status_code == 409 and bad.json()["detail"]["partial_size"] == 3
    assert not dest.exists() and partial_of(dest).exists()
    assert client.post(f"/staging/abort/{sid}", json={"path": str(dest)}).json()["removed_partial"] is True
    assert not partial_of(dest).exists()


def test_resume(local) -> None:
    client, sid, root, _ = local
    data = os.urandom(500_000)
    dest = root / "r.bin"
    upload(client, sid, dest, data[:200_000])
    wrong = upload(client, sid, dest, data[300_000:], offset=300_000)
    assert wrong.status_code == 409 and wrong.json()["detail"]["partial_size"] == 200_000
    assert client.get(f"/staging/partial/{sid}", params={"path": str(dest)}).json()["partial_size"] == 200_000
    assert upload(client, sid, dest, data[200_000:], offset=200_000).json()["partial_size"] == 500_000
    assert commit(client, sid, dest, data).status_code == 200 and dest.read_bytes() == data


def test_mkdir_stat_remove(local) -> None:
    client, sid, root, _ = local
    assert client.post(f"/staging/mkdir/{sid}", json={"path": str(root / "a" / "b"), "parents": True}).is_success
    assert client.post(f"/staging/mkdir/{sid}", json={"path": str(root / "a")}).status_code == 409
    assert client.get(f"/staging/stat/{sid}", params={"path": str(root / "a")}).json()["type"] == "dir"
    assert client.post(f"/staging/remove/{sid}", json={"path": str(root / "a")}).status_code == 409
    assert client.post(f"/staging/remove/{sid}", json={"path": str(root / "a" / "b")}).json()["removed"] == "dir"
    assert client.post(f"/staging/remove/{sid}", json={"path": str(root / "nope")}).status_code == 404


def test_owner_store_prefixes_do_not_bleed(tmp_path) -> None:
    store = OwnerStore(tmp_path / "owners.sqlite")
    r = Path("/r")
    store.claim(r / "a1" / "x", "alice", "file")
    store.claim(r / "a10" / "y", "bob", "file")
    store.claim(r / "a1-z", "bob", "file")
    store.claim(r / "a1.d" / "w", "bob", "file")
    assert store.owns_below(r / "a1", "alice") and not store.owns_below(r / "a1", "bob")
    assert store.names_leading_to(r, "bob") == {"a10", "a1-z", "a1.d"}
    assert store.children(r) == {"a1-z": "bob"} and store.record(r / "a1" / "x") == ("alice", "file")
    store.forget(r / "a1", below=True)
    assert store.owner(r / "a1" / "x") is None and store.owner(r / "a10" / "y") == "bob"
    store.restore(r / "a1-z", None)
    assert store.owner(r / "a1-z") is None
    store.close()


def test_directory_spellings() -> None:
    for path in ("/a/", "/a/.", ".", "~", "~/", "~root", "x/"):
        assert names_directory(path), path
    for path in ("/a/b", "~/f", "a.", "./f", "a/.b"):
        assert not names_directory(path), path


def test_file_operations_refuse_the_root(local) -> None:
    client, sid, root, _ = local
    resp = upload(client, sid, root, b"x", overwrite=True)
    assert resp.status_code == 422 and "allowed root" in resp.json()["detail"]
    assert not partial_of(root).exists()
    assert client.post(f"/staging/commit/{sid}", json={"path": str(root), "size": 1}).status_code == 422
    assert client.post(f"/staging/abort/{sid}", json={"path": str(root)}).status_code == 422
    assert client.post(f"/staging/remove/{sid}", json={"path": str(root)}).status_code == 403 and root.is_dir()
    assert client.get(f"/staging/download/{sid}", params={"path": ""}).status_code == 422


def test_config_contract() -> None:
    assert StagingConfig().roots is None and StagingConfig().allow_dot_dirs == []
    assert StagingConfig().shared_read is False and StagingConfig().state_dir is None
    for bad in ({"chunk_size": 1}, {"root": "/"}, {"max_file_size": 0}):
        with pytest.raises(ValidationError):
            StagingConfig.model_validate(bad)


# -- through real processes -------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage-root")
    with Stack(plugins=["staging"], config={"plugins": {"staging": {"roots": [str(root)]}}},
               workdir=tmp_path_factory.mktemp("stage-stack")) as s:
        s.root = root  # type: ignore[attr-defined]
        yield s


def staging(stack):
    return stack.client().get_edge_client("test").get_plugin("staging")


@pytest.mark.parametrize("size", [0, 1, 100 * 1024 * 1024])
def test_roundtrip_through_bridge(stack, tmp_path, size) -> None:
    client = staging(stack)
    src = make_file(tmp_path / "src", size)
    remote = f"{stack.root}/rt-{size}"
    put = client.put(src, remote)
    assert put["size"] == size and put["sha256"] == sha(src) == sha(Path(remote))
    got = client.get(remote, tmp_path / "back")
    assert got["sha256"] == sha(src) and (tmp_path / "back").stat().st_size == size
    with pytest.raises(ClientError) as err:
        client.put(src, remote)
    assert err.value.status_code == 409


def test_interrupted_upload_is_resumed_and_never_truncates(stack, tmp_path) -> None:
    client = staging(stack)
    src = make_file(tmp_path / "big", 40 * 1024 * 1024)
    remote = f"{stack.root}/resumed.bin"
    sent = 0

    def body():
        nonlocal sent
        with open(src, "rb") as fh:
            while data := fh.read(1 << 20):
                sent += len(data)
                yield data
                if sent >= 15 * (1 << 20):
                    raise ConnectionAbortedError("cable pulled")

    with pytest.raises(Exception):  # noqa: B017 - the client side breaks the transfer
        httpx.put(f"{stack.url}/test/staging/upload/{client.sid}", params={"path": remote, "offset": 0},
                  content=body(), headers={**stack.headers, "content-length": str(40 << 20)}, timeout=60)
    poll_for(lambda: client._get(f"partial/{client.sid}", path=remote)["partial_size"] > 0, 10,
             what="a partial upload kept")
    assert not Path(remote).exists(), "an interrupted upload never shows at the destination"
    result = client.put(src, remote, resume=True)
    assert result["sha256"] == sha(src) == sha(Path(remote))


def test_killed_upload_leaves_no_destination(stack, tmp_path) -> None:
    client = staging(stack)
    src = make_file(tmp_path / "k", 20 * 1024 * 1024)
    remote = f"{stack.root}/killed.bin"
    done = threading.Event()

    def slow_body():
        with open(src, "rb") as fh:
            yield fh.read(5 << 20)
            done.wait(30)
            yield fh.read()

    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            outcome["status"] = httpx.put(f"{stack.url}/test/staging/upload/{client.sid}", params={"path": remote},
                                          content=slow_body(), timeout=60,
                                          headers={**stack.headers, "content-length": str(20 << 20)}).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=send, daemon=True)
    t.start()
    poll_for(lambda: partial_of(Path(remote)).exists() and partial_of(Path(remote)).stat().st_size > 0, 10,
             what="upload under way")
    stack.kill_edge()
    done.set()
    t.join(30)
    stack.start_edge()
    client = staging(stack)
    assert outcome.get("status") != 200, "the upload must not report success"
    assert not Path(remote).exists()
    assert client.abort(remote)["removed_partial"] is True


@pytest.mark.slow
def test_two_gib_both_ways_with_bounded_memory(stack, tmp_path) -> None:
    client = staging(stack)
    size = 2 * 1024**3
    src = make_file(tmp_path / "two", size)
    bridge, edge = psutil.Process(stack.bridge_pid), psutil.Process(stack.edge_pid)
    peak = {"bridge": bridge.memory_info().rss, "edge": edge.memory_info().rss}
    base = dict(peak)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak["bridge"] = max(peak["bridge"], bridge.memory_info().rss)
            peak["edge"] = max(peak["edge"], edge.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        remote = f"{stack.root}/two.bin"
        put = client.put(src, remote)
        got = client.get(remote, tmp_path / "two.back")
    finally:
        stop.set()
        sampler.join()
    digest = sha(src)
    assert put["sha256"] == digest == got["sha256"] == sha(tmp_path / "two.back")
    for name in ("bridge", "edge"):
        growth = (peak[name] - base[name]) / 2**20
        assert growth < 64, f"{name} RSS grew by {growth:.0f} MiB"
    Path(remote).unlink()
