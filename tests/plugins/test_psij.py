"""psij with PSI/J's local executor, through real bridge and edge processes.

States are the project's one vocabulary (``isthmus.jobstates``), PSI/J's names mapped:
NEW, PENDING (QUEUED), RUNNING (ACTIVE), DONE (COMPLETED), FAILED, CANCELLED (CANCELED).
"""

from __future__ import annotations

import time

import psij as psij_lib
import psutil
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from isthmus import ClientError, jobstates
from isthmus.jobstates import JobState, from_psij
from isthmus.plugins.psij.client import is_final
from isthmus.plugins.psij.config import PsijConfig
from isthmus.plugins.psij.store import JobStore
from isthmus.testing.stack import Stack, poll_for

CONFIG = {"scheduler": "none", "plugins": {"psij": {"enabled": True, "allowed_directories": ["~", "/tmp"]}}}


@pytest.fixture(scope="module")
def psij_stack(tmp_path_factory):
    with Stack(plugins=["psij"], config=CONFIG, workdir=tmp_path_factory.mktemp("psij")) as s:
        yield s


def client_for(stack: Stack, token: str | None = None):
    bridge = stack.client(token)
    return bridge.get_edge_client("test").get_plugin("psij"), bridge


def test_echo_hello_states_and_output(psij_stack) -> None:
    psij, bridge = client_for(psij_stack)
    seen: list[tuple[str, str]] = []
    bridge.register_callback(plugin_name="psij", topic="job_status",
                             callback=lambda e, p, t, d: seen.append((d["job_id"], d["state"])))
    assert bridge.wait_for_events(10)
    job_id = psij.submit_job({"executable": "/bin/echo", "arguments": ["hello"]}, executor="local")
    final = psij.wait(job_id, timeout=30)
    assert final["state"] == "DONE" and final["exit_code"] == 0 and final["native_id"]
    stdout, stderr = psij.tail(job_id)
    assert stdout == "hello\n" and stderr == ""
    poll_for(lambda: (job_id, "DONE") in seen, 10, what="DONE notification")
    states = [s for j, s in seen if j == job_id]
    assert states == ["PENDING", "RUNNING", "DONE"]
    assert [h["state"] for h in final["history"]] == ["NEW", "PENDING", "RUNNING", "DONE"]
    assert final["started"] == final["history"][2]["time"] and final["finished"]
    assert any(j["job_id"] == job_id for j in psij.list_jobs())


def test_failing_job_reports_exit_code(psij_stack) -> None:
    psij, _ = client_for(psij_stack)
    job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 7"]}, "local")
    final = psij.wait(job_id, timeout=30)
    assert final["state"] == "FAILED" and final["exit_code"] == 7
    assert psij.tail(job_id)[1] == "oops\n"


def test_cancel_sleep_kills_the_process(psij_stack) -> None:
    psij, _ = client_for(psij_stack)
    job_id = psij.submit_job({"executable": "/bin/sleep", "arguments": ["600"]}, "local")
    poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 20, what="job RUNNING")

    def sleepers() -> list[psutil.Process]:
        """This job's processes: its wrapper (whose command line names the job) and what it runs."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if any(job_id in part for part in proc.info["cmdline"] or []):
                found.append(proc)
                found += proc.children(recursive=True)
        return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    poll_for(lambda: sleepers(), 10, what="the sleep process")
    assert psij.cancel_job(job_id)["status"] == "cancel requested"
    final = psij.wait(job_id, timeout=30)
    assert final["state"] == "CANCELLED"
    poll_for(lambda: not sleepers(), 10, what="the sleep process gone")


def test_bad_specs_are_422_with_every_reason(psij_stack) -> None:
    psij, _ = client_for(psij_stack)
    with pytest.raises(ClientError) as err:
        attributes = {"duration": "soon", "custom_attributes": {"bad key": 1}}
        psij.submit_job({"executable": "", "arguments": 3, "colour": "x", "attributes": attributes})
    assert err.value.status_code == 422
    fields = {e["field"] for e in err.value.detail["errors"]}
    assert fields == {"executable", "arguments", "colour", "attributes.duration", "attributes.custom_attributes"}
    with pytest.raises(ClientError) as err:
        psij.submit_job({"executable": "/bin/echo"}, executor="nonesuch")
    assert err.value.status_code == 422 and "nonesuch" in str(err.value)


def test_allow_list_refuses_by_default(psij_stack, tmp_path) -> None:
    psij, _ = client_for(psij_stack)
    script = tmp_path / "evil.sh"
    script.write_text("#!/bin/sh\necho pwned\n")
    script.chmod(0o755)
    with pytest.raises(ClientError) as err:
        psij.submit_job({"executable": str(script)}, "local")
    assert err.value.status_code == 403 and "allowed_executables" in str(err.value)
    with pytest.raises(ClientError) as err:
        psij.submit_job({"executable": "/bin/echo", "directory": "/etc"}, "local")
    assert err.value.status_code == 403 and "outside the allowed directories" in str(err.value)
    with pytest.raises(ClientError) as err:
        psij.submit_job({"executable": "/bin/echo", "stdout_path": "/etc/passwd"}, "local")
    assert err.value.status_code == 403


def test_owners_and_roles(psij_stack) -> None:
    alice = psij_stack.create_token("user", "alice")
    bob = psij_stack.create_token("user", "bob")
    viewer = psij_stack.create_token("viewer", "vic")
    a, _ = client_for(psij_stack, alice)
    b, _ = client_for(psij_stack, bob)
    job_id = a.submit_job({"executable": "/bin/true"}, "local")
    with pytest.raises(ClientError) as err:
        b.get_job_status(job_id)
    assert err.value.status_code == 404
    assert all(j["owner"] == "bob" for j in b.list_jobs())
    with pytest.raises(ClientError) as err:
        b.cancel_job(job_id)
    assert err.value.status_code == 404
    admin, _ = client_for(psij_stack)
    owner = a.get_job_status(job_id)["owner"]  # the principal's id (its token's), not its display name
    assert owner and admin.get_job_status(job_id)["owner"] == owner
    assert owner not in {j["owner"] for j in b.list_jobs()}
    with psij_stack.http(viewer) as http:
        body = {"job_spec": {"executable": "/bin/true"}}
        assert http.post(f"/test/psij/submit_job/{a.sid}", json=body).status_code == 403


def test_edge_restart_keeps_and_reattaches_jobs(tmp_path) -> None:
    with Stack(plugins=["psij"], config=CONFIG, workdir=tmp_path / "w") as s:
        psij, _ = client_for(s)
        done_id = psij.submit_job({"executable": "/bin/echo", "arguments": ["before"]}, "local")
        psij.wait(done_id, timeout=30)
        job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "sleep 3; echo after; exit 0"]},
                                 "local")
        poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 20, what="job RUNNING")
        s.kill_edge()  # SIGKILL: no clean shutdown
        s.wait_edge(present=False)
        s.start_edge()
        psij2, _ = client_for(s)
        assert {done_id, job_id} <= {j["job_id"] for j in psij2.list_jobs()}
        final = psij2.wait(job_id, timeout=30)
        assert final["state"] == "DONE" and final["exit_code"] == 0
        assert psij2.tail(job_id)[0] == "after\n"
        assert psij2.tail(done_id)[0] == "before\n"


def test_job_that_ends_while_the_edge_is_down(tmp_path) -> None:
    with Stack(plugins=["psij"], config=CONFIG, workdir=tmp_path / "w") as s:
        psij, _ = client_for(s)
        job_id = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "sleep 1; exit 3"]}, "local")
        poll_for(lambda: psij.get_job_status(job_id)["state"] == "RUNNING", 20, what="job RUNNING")
        s.kill_edge()
        time.sleep(2)
        s.start_edge()
        final = client_for(s)[0].wait(job_id, timeout=20)
        assert final["state"] == "FAILED" and final["exit_code"] == 3


def test_store_retention(tmp_path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for i in range(15):
        rec = {"id": f"j{i}", "owner": "a", "executor": "local", "native_id": None, "spec": {"executable": "x"},
               "state": "NEW", "exit_code": None, "message": None, "stdout_path": "o", "stderr_path": "e",
               "exit_file": "x", "workdir": str(tmp_path / f"j{i}")}
        store.create(rec)
        store.transition(f"j{i}", "DONE", 0)
    store.create({**rec, "id": "running", "state": "RUNNING"})
    assert [r["id"] for r in store.prune(max_age=1e9, max_jobs=10)] == ["j0", "j1", "j2", "j3", "j4", "j5"]
    assert len(store.list()) == 10 and store.get("running") is not None
    assert store.transition("j14", "FAILED") is None  # final stays final
    store.close()


def test_config_contract() -> None:
    cfg = PsijConfig()
    assert cfg.allow_any_executable is False and cfg.queue_polling_interval == 1
    assert "/usr/bin/*" in cfg.allowed_executables and cfg.retention_days == 30
    for bad in ({"queue_polling_interval": 0}, {"output_chunk": 10}, {"allow_any": True}):
        with pytest.raises(ValidationError):
            PsijConfig.model_validate(bad)


def test_in_process_submission_without_a_host(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    from isthmus.plugins.psij.plugin import PluginPsij

    app = FastAPI()
    plugin = PluginPsij(app)
    with TestClient(app) as client:
        sid = client.post("/psij/register_session").json()["sid"]
        job_id = client.post(f"/psij/submit_job/{sid}", json={"executable": "/bin/echo", "arguments": "a b",
                                                               "executor": "local"}).json()["job_id"]
        poll_for(lambda: client.get(f"/psij/job_status/{sid}/{job_id}").json()["state"] == "DONE", 20,
                 what="flat-form job done")
        assert client.get(f"/psij/job_status/{sid}/{job_id}", params={"stdout_offset": 2}).json()["stdout"] == "b\n"
        far = client.get(f"/psij/job_status/{sid}/{job_id}", params={"stdout_offset": 1 << 62})  # past the end
        assert far.status_code == 200 and far.json()["stdout"] == ""
    assert plugin.dir == tmp_path / "isthmus" / "psij"


def test_one_vocabulary_and_psij_names_mapped_in_one_place() -> None:
    """Every PSI/J state has exactly one name of ours; the scheduler layer uses the very same enum."""
    from isthmus import schedulers

    assert schedulers.JobState is JobState and jobstates.FINAL == {JobState.DONE, JobState.FAILED,
                                                                   JobState.CANCELLED}
    mapped = {s.name: from_psij(s.name) for s in psij_lib.JobState}
    assert mapped == {"NEW": JobState.NEW, "QUEUED": JobState.PENDING, "ACTIVE": JobState.RUNNING,
                      "COMPLETED": JobState.DONE, "FAILED": JobState.FAILED, "CANCELED": JobState.CANCELLED}
    assert all(from_psij(s.name).final == s.final for s in psij_lib.JobState)
    assert from_psij("COMPLETED", 3) is JobState.FAILED and from_psij("COMPLETED", 0) is JobState.DONE
    assert from_psij("CANCELED", 143) is JobState.CANCELLED and from_psij("BOGUS") is JobState.UNKNOWN
    assert jobstates.parse("RUNNING") is JobState.RUNNING and jobstates.parse("ACTIVE") is JobState.RUNNING
    assert [is_final(s) for s in ("DONE", "CANCELLED", "COMPLETED", "CANCELED", "RUNNING", "NEW", None)] == \
        [True, True, True, True, False, False, False]


def test_store_rewrites_records_kept_under_psij_names(tmp_path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    base = {"owner": "a", "executor": "local", "native_id": "1", "spec": {"executable": "x"}, "exit_code": None,
            "message": None, "stdout_path": "o", "stderr_path": "e", "exit_file": "x", "workdir": "w"}
    store.create({**base, "id": "old-done", "state": "NEW"})
    for legacy in ("QUEUED", "ACTIVE", "COMPLETED"):  # as an edge before the one vocabulary wrote them
        store._db.execute("UPDATE jobs SET state = ?, history = json_insert(history, '$[#]', "
                          "json_object('state', ?, 'time', 1.0)) WHERE id = 'old-done'", (legacy, legacy))
    store.create({**base, "id": "old-running", "state": "NEW"})
    store._db.execute("UPDATE jobs SET state = 'ACTIVE' WHERE id = 'old-running'")
    store.create({**base, "id": "old-cancelled", "state": "CANCELED"})
    store.close()
    store = JobStore(path)
    done = store.get("old-done")
    assert done is not None and done["state"] == "DONE"
    assert [h["state"] for h in done["history"]] == ["NEW", "PENDING", "RUNNING", "DONE"]
    assert [r["id"] for r in store.unfinished()] == ["old-running"]
    assert store.get("old-running")["state"] == "RUNNING"  # type: ignore[index]
    assert store.transition("old-cancelled", "FAILED") is None  # CANCELLED: final, stays final
    assert {r["id"] for r in store.prune(max_age=-1, max_jobs=10)} == {"old-done", "old-cancelled"}
    store.close()
