"""Security review items 10 and 13: per-principal isolation in staging and queue_info, and
staging's file operations refusing a root (or any directory) as their target.

Two user tokens share the display name "alice" but not their principal id: everything
below is decided by id. A viewer (also called "alice") and the admin complete the cast.
Attacks go through real bridge and edge processes; the shared_read switch and the cancel
rule are also checked in process, where principals are set around each request.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from isthmus import ClientError, schedulers
from isthmus.plugins.psij.store import JobStore
from isthmus.plugins.queue_info.config import QueueInfoConfig
from isthmus.plugins.queue_info.plugin import PluginQueueInfo
from isthmus.plugins.staging.config import StagingConfig
from isthmus.plugins.staging.plugin import PluginStaging, partial_of
from isthmus.schedulers import JobState
from isthmus.schedulers.slurm import Slurm
from isthmus.testing.stack import Stack, poll_for
from isthmus.types import Principal, Role, current_principal
from tests.plugins.test_queue_info import RecordedPBS
from tests.slurm.conftest import sbatch, slurm, wait_until  # noqa: F401 - fixtures for the slurm tests

PRINCIPAL_HEADER = "x-test-principal"


@dataclass
class Caller:
    """One token's view of the staging plugin: raw HTTP (for status codes) and its own session."""

    http: httpx.Client
    sid: str
    client: Any  # StagingClient

    def get(self, route: str, path: str) -> httpx.Response:
        return self.http.get(f"/test/staging/{route}/{self.sid}", params={"path": path})

    def post(self, route: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/test/staging/{route}/{self.sid}", json=body)

    def upload(self, path: str, data: bytes, offset: int = 0, overwrite: bool = False) -> httpx.Response:
        return self.http.put(f"/test/staging/upload/{self.sid}", content=data,
                             params={"path": path, "offset": offset, "overwrite": str(overwrite).lower()})

    def commit(self, path: str, data: bytes, overwrite: bool = False) -> httpx.Response:
        return self.post("commit", {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                    "overwrite": overwrite})

    def names(self, path: str) -> set[str]:
        resp = self.get("list", path)
        assert resp.status_code == 200, resp.text
        return {e["name"] for e in resp.json()["entries"]}


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Iterator[tuple[Stack, Path, dict[str, Caller]]]:
    root = tmp_path_factory.mktemp("iso-root")
    with Stack(plugins=["staging"], config={"plugins": {"staging": {"roots": [str(root)]}}},
               workdir=tmp_path_factory.mktemp("iso-stack")) as stack:
        tokens = {"alice1": stack.create_token("user", "alice"), "alice2": stack.create_token("user", "alice"),
                  "admin": stack.admin_token}
        callers = {}
        for who, token in tokens.items():
            client = stack.client(token).get_edge_client("test").get_plugin("staging")
            callers[who] = Caller(stack.http(token, timeout=30), client.sid, client)
        # a viewer cannot open a session (POST); the best it can do is borrow alice1's session id
        callers["viewer"] = Caller(stack.http(stack.create_token("viewer", "alice"), timeout=30),
                                   callers["alice1"].sid, None)
        yield stack, root, callers
        for caller in callers.values():
            caller.http.close()


# -- item 10a: staging ---------------------------------------------------------------------------------------

def test_committed_files_belong_to_their_uploader(staged, tmp_path) -> None:
    _, root, who = staged
    a1, a2, viewer, admin = who["alice1"], who["alice2"], who["viewer"], who["admin"]
    src = tmp_path / "src"
    src.write_bytes(b"alice1's data")
    target = f"{root}/report.txt"
    a1.client.put(src, target)

    for route in ("stat", "download", "checksum"):  # same display name, other principal: as if it did not exist
        resp = a2.get(route, target)
        assert resp.status_code == 404 and "does not exist" in resp.text, (route, resp.text)
        assert viewer.get(route, target).status_code == 404  # alice1's session is not the viewer's
    assert "report.txt" not in a2.names(str(root))
    assert viewer.get("list", str(root)).status_code == 404
    with pytest.raises(ClientError) as err:
        a2.client.get(target, tmp_path / "stolen")
    assert err.value.status_code == 404 and not (tmp_path / "stolen").exists()
    assert a2.post("remove", {"path": target}).status_code == 404
    assert viewer.post("remove", {"path": target}).status_code == 403  # and no write role anyway
    refused = a2.upload(target, b"overwritten by alice2", overwrite=True)
    assert refused.status_code == 403 and "not yours" in refused.json()["detail"]
    assert a2.upload(target, b"x").status_code == 409  # a write cannot hide that something is there
    assert Path(target).read_bytes() == b"alice1's data"

    assert "report.txt" in a1.names(str(root)) and a1.get("stat", target).json()["size"] == 13
    assert "report.txt" in admin.names(str(root)) and admin.get("download", target).content == b"alice1's data"
    a1.client.put(src, target, overwrite=True)  # the owner may replace it
    assert a1.post("remove", {"path": target}).json()["removed"] == "file"
    assert not Path(target).exists()


def test_partial_uploads_belong_to_their_uploader(staged) -> None:
    _, root, who = staged
    a1, a2 = who["alice1"], who["alice2"]
    target = f"{root}/big.bin"
    data = b"0123456789" * 1000
    assert a1.upload(target, data[:4000]).json()["partial_size"] == 4000  # interrupted: no commit

    assert a2.get("partial", target).json()["partial_size"] == 0  # not revealed
    assert a2.commit(target, data[:4000]).status_code == 404
    assert a2.post("abort", {"path": target}).json()["removed_partial"] is False
    hijack = a2.upload(target, b"alice2 starts over")  # offset 0 would have thrown the partial away
    assert hijack.status_code == 409 and "another upload" in hijack.json()["detail"]
    assert partial_of(Path(target)).stat().st_size == 4000

    assert a1.get("partial", target).json()["partial_size"] == 4000
    assert a1.upload(target, data[4000:], offset=4000).json()["partial_size"] == len(data)
    assert a1.commit(target, data).status_code == 200
    assert Path(target).read_bytes() == data
    assert a2.get("stat", target).status_code == 404


def test_pre_existing_data_is_admin_only_by_default(staged) -> None:
    _, root, who = staged
    (root / "site-data.txt").write_text("put there by the system, not through Isthmus")
    (root / "project").mkdir()
    (root / "project" / "input.dat").write_text("old input")
    for name in ("alice1", "alice2"):
        caller = who[name]
        assert {"site-data.txt", "project"}.isdisjoint(caller.names(str(root))), name
        assert caller.get("download", f"{root}/site-data.txt").status_code == 404
        assert caller.get("stat", f"{root}/project").status_code == 404
        assert caller.get("list", f"{root}/project").status_code == 404
    assert who["alice1"].upload(f"{root}/site-data.txt", b"x", overwrite=True).status_code == 403
    assert who["alice1"].upload(f"{root}/project/new.dat", b"x").status_code == 404  # hidden directory
    assert who["alice1"].post("remove", {"path": f"{root}/site-data.txt"}).status_code == 404
    admin = who["admin"]
    assert {"site-data.txt", "project"} <= admin.names(str(root))
    assert admin.get("download", f"{root}/project/input.dat").content == b"old input"


def test_directories_belong_to_their_maker(staged) -> None:
    _, root, who = staged
    a1, a2 = who["alice1"], who["alice2"]
    assert a1.post("mkdir", {"path": f"{root}/a1/deep/er", "parents": True}).json()["created"] is True
    assert a1.upload(f"{root}/a1/deep/er/f", b"f").status_code == 200
    assert a1.commit(f"{root}/a1/deep/er/f", b"f").status_code == 200
    assert "a1" in a1.names(str(root)) and a1.names(f"{root}/a1/deep/er") == {"f"}

    assert "a1" not in a2.names(str(root))
    for path in (f"{root}/a1", f"{root}/a1/deep", f"{root}/a1/deep/er/f"):
        assert a2.get("stat", path).status_code == 404, path
    assert a2.get("list", f"{root}/a1").status_code == 404
    assert a2.upload(f"{root}/a1/planted", b"x").status_code == 404
    assert a2.post("mkdir", {"path": f"{root}/a1/deep/mine", "parents": True}).status_code == 404
    assert a2.post("mkdir", {"path": f"{root}/a1", "exist_ok": True}).status_code == 409
    assert a2.post("remove", {"path": f"{root}/a1/deep/er/f"}).status_code == 404
    # alice2's own directory next to it: alice1 does not see it, each sees their own
    assert a2.post("mkdir", {"path": f"{root}/a2"}).status_code == 200
    assert "a2" not in a1.names(str(root)) and "a2" in a2.names(str(root))
    assert {"a1", "a2"} <= who["admin"].names(str(root))


# -- item 13: a root or a directory is never a file target -----------------------------------------------------

def test_root_and_directories_are_refused_as_file_targets(staged, tmp_path) -> None:
    _, root, who = staged
    admin = who["admin"]  # the most powerful caller: the refusal is about the path, not the role
    outside_partial = root.parent / f".{root.name}.isthmus-partial"
    for spelling in (str(root), f"{root}/", f"{root}/."):
        resp = admin.upload(spelling, b"would land outside the root", overwrite=True)
        assert resp.status_code == 422, (spelling, resp.text)
        assert "directory" in resp.json()["detail"] or "root" in resp.json()["detail"]
        assert admin.commit(spelling, b"x").status_code == 422
        assert admin.post("abort", {"path": spelling}).status_code == 422
        for route in ("partial", "download", "checksum"):
            assert admin.get(route, spelling).status_code == 422, (route, spelling)
    assert "allowed root" in admin.upload(str(root), b"x").json()["detail"]
    assert not outside_partial.exists(), "nothing is ever written beside a root"
    with pytest.raises(ClientError) as err:
        src = tmp_path / "s"
        src.write_bytes(b"s")
        admin.client.put(src, str(root))
    assert err.value.status_code == 422

    (root / "adir").mkdir(exist_ok=True)
    resp = admin.upload(f"{root}/adir", b"x", overwrite=True)
    assert resp.status_code == 409 and "is a directory" in resp.json()["detail"]
    for path in (f"{root}/nofile/", ".", "~", ""):
        assert admin.upload(path, b"x").status_code == 422, path
    assert admin.post("remove", {"path": str(root)}).status_code == 403 and root.is_dir()
    assert admin.post("remove", {"path": f"{root}/"}).status_code == 403
    assert admin.post("mkdir", {"path": str(root)}).status_code == 409
    assert admin.get("stat", str(root)).json()["type"] == "dir"  # reading a root as a directory is fine
    (root / "plain").write_text("p")
    assert admin.get("stat", f"{root}/plain/").status_code == 409  # 'plain/' says directory; it is not
    assert admin.post("remove", {"path": f"{root}/plain/"}).status_code == 409 and (root / "plain").exists()


def test_commit_onto_a_directory_made_meanwhile_is_a_409(staged) -> None:
    _, root, who = staged
    admin = who["admin"]
    target = f"{root}/became-a-dir"
    assert admin.upload(target, b"abc").status_code == 200
    Path(target).mkdir()
    resp = admin.commit(target, b"abc", overwrite=True)
    assert resp.status_code == 409 and "is a directory" in resp.json()["detail"]
    assert admin.post("abort", {"path": target}).json()["removed_partial"] is True


# -- in process: shared_read and the cancel rule with principals set around each request ----------------------

def as_principal(app: FastAPI) -> None:
    """Serve each request as the principal named in a test header (what the edge does from the wire)."""

    @app.middleware("http")
    async def principal(request: Request, call_next: Any) -> Any:
        raw = request.headers.get(PRINCIPAL_HEADER)
        token = current_principal.set(Principal.from_wire(json.loads(raw)) if raw else None)
        try:
            return await call_next(request)
        finally:
            current_principal.reset(token)


ALICE1 = Principal("alice", Role.user, "tok_alice1")
ALICE2 = Principal("alice", Role.user, "tok_alice2")
VIEWER = Principal("alice", Role.viewer, "tok_alice_viewer")
ADMIN = Principal("root", Role.admin, "tok_admin")


class InProcess:
    def __init__(self, client: TestClient, plugin: str) -> None:
        self.client = client
        self.plugin = plugin
        self.sids: dict[str, str] = {}

    def headers(self, who: Principal) -> dict[str, str]:
        return {PRINCIPAL_HEADER: json.dumps(who.to_wire())}

    def sid(self, who: Principal) -> str:
        if who.id not in self.sids:
            resp = self.client.post(f"/{self.plugin}/register_session", headers=self.headers(who))
            self.sids[who.id] = resp.json()["sid"]
        return self.sids[who.id]

    def get(self, who: Principal, route: str, **params: Any) -> httpx.Response:
        return self.client.get(f"/{self.plugin}/{route}/{self.sid(who)}", params=params, headers=self.headers(who))

    def post(self, who: Principal, route: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(f"/{self.plugin}/{route}/{self.sid(who)}", json=body, headers=self.headers(who))

    def put(self, who: Principal, route: str, data: bytes, **params: Any) -> httpx.Response:
        return self.client.put(f"/{self.plugin}/{route}/{self.sid(who)}", content=data, params=params,
                               headers=self.headers(who))


@pytest.fixture
def shared_staging(tmp_path) -> Iterator[tuple[InProcess, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    app = FastAPI()
    as_principal(app)
    plugin = PluginStaging(app)
    plugin.config = StagingConfig(roots=[str(root)], shared_read=True, state_dir=str(tmp_path / "state"))
    plugin.sandbox = plugin._sandbox(plugin.config)
    with TestClient(app) as client:
        yield InProcess(client, "staging"), root
    asyncio.run(plugin.on_shutdown())


def test_shared_read_opens_pre_existing_data_not_other_principals_files(shared_staging) -> None:
    s, root = shared_staging
    (root / "site.txt").write_text("shared")
    data = b"alice1 only"
    assert s.put(ALICE1, "upload", data, path=f"{root}/mine.txt").status_code == 200
    assert s.post(ALICE1, "commit", {"path": f"{root}/mine.txt", "size": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}).status_code == 200
    for reader in (ALICE2, VIEWER):
        names = {e["name"] for e in s.get(reader, "list", path=str(root)).json()["entries"]}
        assert names == {"site.txt"}
        assert s.get(reader, "download", path=f"{root}/site.txt").content == b"shared"
        assert s.get(reader, "download", path=f"{root}/mine.txt").status_code == 404
    assert s.put(ALICE2, "upload", b"x", path=f"{root}/site.txt", overwrite="true").status_code == 403
    assert s.post(ALICE2, "remove", {"path": f"{root}/site.txt"}).status_code == 403  # shared is read-only
    assert {e["name"] for e in s.get(ALICE1, "list", path=str(root)).json()["entries"]} == {"site.txt", "mine.txt"}
    assert s.post(ADMIN, "remove", {"path": f"{root}/site.txt"}).json()["removed"] == "file"


def test_staging_secure_default() -> None:
    assert StagingConfig().shared_read is False


# -- item 10b: queue_info cancel ------------------------------------------------------------------------------

@pytest.fixture
def queue(tmp_path) -> Iterator[tuple[InProcess, RecordedPBS, JobStore]]:
    system = RecordedPBS(getpass.getuser())
    schedulers.use(system)
    store = JobStore(tmp_path / "psij" / "jobs.sqlite")
    app = FastAPI()
    as_principal(app)
    plugin = PluginQueueInfo(app)
    plugin.config = QueueInfoConfig(prefetch=False, psij_database=str(store.path))
    try:
        with TestClient(app) as client:
            yield InProcess(client, "queue_info"), system, store
    finally:
        store.close()
        schedulers.use(None)


def record(store: JobStore, job_id: str, owner: str, executor: str, native_id: str) -> None:
    store.create({"id": job_id, "owner": owner, "executor": executor, "native_id": native_id,
                  "spec": {"executable": "/bin/sleep"}, "state": "RUNNING", "exit_code": None, "message": None,
                  "stdout_path": "/dev/null", "stderr_path": "/dev/null", "exit_file": "/dev/null",
                  "workdir": "/tmp"})


def test_cancel_needs_the_submitting_principal_or_an_admin(queue) -> None:
    q, system, store = queue
    record(store, "j1", ALICE1.id, "pbs", "4101.pbs01")  # alice1 submitted 4101 through psij
    record(store, "j2", ALICE1.id, "local", "4102.pbs01")  # a local process id never names a scheduler job
    for attacker in (ALICE2, Principal("alice", Role.user)):  # the same display name; the second's id is "alice"
        resp = q.post(attacker, "cancel_job", {"job_id": "4101.pbs01"})
        assert resp.status_code == 403, resp.text
        assert "only the principal that submitted it" in resp.json()["detail"] and "admin" in resp.json()["detail"]
    assert q.post(VIEWER, "cancel_job", {"job_id": "4101.pbs01"}).status_code == 403
    assert q.post(ALICE1, "cancel_job", {"job_id": "4102.pbs01"}).status_code == 403
    assert system.cancelled == []

    assert q.post(ALICE1, "cancel_job", {"job_id": "4101.pbs01"}).status_code == 200
    assert q.post(ADMIN, "cancel_job", {"job_id": "4102.pbs01"}).status_code == 200  # not via Isthmus: admin only
    assert system.cancelled == ["4101.pbs01", "4102.pbs01"]
    refused = q.post(ADMIN, "cancel_job", {"job_id": "4103.pbs01"})  # another Unix user's job: never
    assert refused.status_code == 403 and "bob" in refused.json()["detail"]


def test_newest_record_of_a_reused_native_id_decides(queue) -> None:
    q, system, store = queue
    record(store, "old", ALICE1.id, "pbs", "4101.pbs01")
    record(store, "new", ALICE2.id, "pbspro", "4101.pbs01")
    assert q.post(ALICE1, "cancel_job", {"job_id": "4101.pbs01"}).status_code == 403
    assert q.post(ALICE2, "cancel_job", {"job_id": "4101.pbs01"}).status_code == 200
    assert system.cancelled == ["4101.pbs01"]


def test_without_psij_records_only_admins_cancel(queue, tmp_path) -> None:
    q, system, store = queue
    store.close()
    (tmp_path / "psij" / "jobs.sqlite").unlink()
    assert q.post(ALICE1, "cancel_job", {"job_id": "4101.pbs01"}).status_code == 403
    assert q.post(ADMIN, "cancel_job", {"job_id": "4101.pbs01"}).status_code == 200
    assert system.cancelled == ["4101.pbs01"]


# -- item 10b on the real Slurm: psij submits, queue_info cancels ---------------------------------------------

@pytest.fixture(scope="module")
def slurm_stack(slurm, tmp_path_factory):  # noqa: F811 - the imported slurm fixture
    config = {"scheduler": "slurm", "plugins": {"psij": {"allowed_directories": ["~", "/tmp"]},
                                                "queue_info": {"cache_ttl": 0.5, "prefetch": False}}}
    with Stack(plugins=["psij", "queue_info"], env=slurm.env, config=config,
               workdir=tmp_path_factory.mktemp("iso-slurm")) as stack:
        yield stack


def plugins_for(stack: Stack, token: str | None) -> tuple[Any, Any]:
    edge = stack.client(token).get_edge_client("test")
    return edge.get_plugin("psij"), edge.get_plugin("queue_info")


def slurm_state(job_id: str) -> JobState | None:
    job = asyncio.run(Slurm().job(job_id))
    return job.state if job else None


@pytest.mark.slurm
def test_cancel_on_slurm_needs_the_submitter(slurm_stack, sbatch) -> None:  # noqa: F811 - imported fixture
    alice1 = slurm_stack.create_token("user", "alice")
    alice2 = slurm_stack.create_token("user", "alice")
    viewer = slurm_stack.create_token("viewer", "alice")
    psij1, qi1 = plugins_for(slurm_stack, alice1)
    _, qi2 = plugins_for(slurm_stack, alice2)
    _, qi_admin = plugins_for(slurm_stack, None)
    job = psij1.submit_job({"executable": "/bin/sleep", "arguments": ["600"],
                            "attributes": {"queue_name": "long", "duration": "00:20:00"}})
    native = poll_for(lambda: psij1.get_job_status(job)["native_id"], 60, 0.5, what="a Slurm job id")
    try:
        foreign = sbatch("-p", "long", "-J", "not-isthmus", "-t", "10", "--wrap", "sleep 600")
        wait_until(lambda: {native, foreign} <= {j["job_id"] for j in qi_admin.list_all_jobs(force=True)}, 30,
                   "both jobs listed")

        for client, job_id in ((qi2, native), (qi1, foreign), (qi2, foreign)):
            with pytest.raises(ClientError) as err:
                client.cancel_job(job_id)
            assert err.value.status_code == 403 and "only the principal that submitted it" in str(err.value)
        with slurm_stack.http(viewer) as http:  # a viewer has no session of its own; it may not POST at all
            assert http.post(f"/test/queue_info/cancel_job/{qi1.sid}", json={"job_id": native}).status_code == 403
        assert slurm_state(native) in (JobState.PENDING, JobState.RUNNING)
        assert slurm_state(foreign) in (JobState.PENDING, JobState.RUNNING)

        assert qi1.cancel_job(native)["status"] == "cancel requested"
        assert qi_admin.cancel_job(foreign)["status"] == "cancel requested"
        wait_until(lambda: slurm_state(native) is JobState.CANCELLED, 60, "psij job CANCELLED")
        wait_until(lambda: slurm_state(foreign) is JobState.CANCELLED, 60, "foreign job CANCELLED")
    finally:  # never leave a 10-minute job behind, whatever failed
        subprocess.run(["scancel", native], capture_output=True, timeout=30)
