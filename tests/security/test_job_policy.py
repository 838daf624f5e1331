"""Security review items for jobs (psij) and tasks: each attack, reproduced, now refused.

Real bridge and edge processes (``Stack``), with ``ISTHMUS_EDGE_TOKEN`` in the edge's
environment as always: jobs and tasks must never see it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from isthmus import ClientError
from isthmus.plugins.psij.spec import JobSpecModel, parse_duration
from isthmus.testing.stack import Stack, free_port, poll_for
from tests.conftest import support_env

ROOT = Path(__file__).resolve().parents[2]
# ISTHMUS_SITE_SECRET: an Isthmus variable the edge itself does not consume (and so does not remove)
SITE = {"SITE_LICENSE": "lic-1234", "EDGE_PRIVATE": "not-for-jobs", "ISTHMUS_SITE_SECRET": "site-secret-4711"}


def _tasks_env(**extra: str) -> dict[str, str]:
    base = support_env(**extra)
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base["PYTHONPATH"]])  # tests.plugins.tasks_helpers
    return base


def _stack(plugins: list[str], config: dict[str, Any], workdir: Path, env: dict[str, str]) -> Stack:
    return Stack(plugins=plugins, config=config, workdir=workdir, env=env)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The edge's $HOME: a throw-away directory, so a missed refusal never touches a real dot-file."""
    path = tmp_path_factory.mktemp("home")
    (path / ".ssh").mkdir()
    return path.resolve()


@pytest.fixture(scope="module")
def psij_stack(tmp_path_factory: pytest.TempPathFactory, home: Path):
    config = {"scheduler": "none", "plugins": {"psij": {
        "enabled": True, "allowed_directories": ["~", "/tmp"],
        # an admin allow-listing an ISTHMUS_ name must not leak it either
        "env_passthrough": ["SITE_*", "ISTHMUS_EDGE_TOKEN", "ISTHMUS_SITE_SECRET"]}}}
    stack = _stack(["psij"], config, tmp_path_factory.mktemp("psij-sec"), {**SITE, "HOME": str(home)})
    with stack:
        yield stack


@pytest.fixture(scope="module")
def tasks_stack(tmp_path_factory: pytest.TempPathFactory):
    config = {"plugins": {"tasks": {"workers": 2, "env_passthrough": ["SITE_*", "ISTHMUS_*"]}}}
    with _stack(["tasks"], config, tmp_path_factory.mktemp("tasks-sec"), _tasks_env(**SITE)) as stack:
        yield stack


def psij_client(stack: Stack) -> Any:
    return stack.client().get_edge_client("test").get_plugin("psij")


def tasks_client(stack: Stack, **kwargs: Any) -> Any:
    return stack.client().get_edge_client("test").get_plugin("tasks", **kwargs)


def refused(call: Any, status: int) -> ClientError:
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.status_code == status, err.value
    return err.value


def assert_clean(env_text: str, stack: Stack, where: str) -> None:
    lines = env_text.splitlines()
    assert not [line for line in lines if line.startswith("ISTHMUS_")], f"{where}: an ISTHMUS_ variable leaked"
    assert stack.edge_token not in env_text, f"{where}: the edge token leaked"
    assert "site-secret-4711" not in env_text, f"{where}: an ISTHMUS_ variable's value leaked"
    assert "EDGE_PRIVATE" not in env_text, f"{where}: a variable that is not allow-listed passed"


# -- item 1: a clean environment ------------------------------------------------------------------------


def test_psij_job_gets_a_clean_environment(psij_stack: Stack) -> None:
    """``/usr/bin/env`` as a job: no token, no ISTHMUS_*, only allow-listed variables and the spec's."""
    psij = psij_client(psij_stack)
    job_id = psij.submit_job({"executable": "/usr/bin/env", "environment": {"JOB_VAR": "from-spec"}}, "local")
    final = psij.wait(job_id, timeout=30)
    assert final["state"] == "DONE", final
    out = psij.tail(job_id)[0]
    assert_clean(out, psij_stack, "psij job")
    lines = out.splitlines()
    assert any(line.startswith("PATH=") for line in lines)
    assert "JOB_VAR=from-spec" in lines and "SITE_LICENSE=lic-1234" in lines  # spec + admin passthrough
    # inherit_environment: false gives the spec's variables only
    job_id = psij.submit_job({"executable": "/usr/bin/env", "environment": {"ONLY": "me"},
                              "inherit_environment": False}, "local")
    psij.wait(job_id, timeout=30)
    out = psij.tail(job_id)[0]
    assert_clean(out, psij_stack, "psij job without inheritance")
    assert "ONLY=me" in out.splitlines() and "SITE_LICENSE" not in out and not out.startswith("PATH=")


def test_tasks_get_a_clean_environment(tasks_stack: Stack) -> None:
    """Executable tasks get the clean environment; function tasks find no secret in their worker."""
    tasks = tasks_client(tasks_stack)
    exe, fn = tasks.submit_tasks([
        {"executable": "/usr/bin/env", "environment": {"TASK_VAR": "from-spec"}},
        {"function": "tests.plugins.tasks_helpers:environment_view"}])
    assert set(tasks.wait_tasks([exe, fn], timeout=60).values()) == {"DONE"}
    out = tasks.get_task(exe)["stdout"]
    assert_clean(out, tasks_stack, "executable task")
    lines = out.splitlines()
    assert any(line.startswith("PATH=") for line in lines)
    assert "TASK_VAR=from-spec" in lines and "SITE_LICENSE=lic-1234" in lines
    view = tasks.get_task(fn)["return_value"]
    environ = "\n".join(f"{k}={v}" for k, v in view["environ"].items())
    assert_clean(environ.replace("EDGE_PRIVATE", ""), tasks_stack, "function task's os.environ")
    assert_clean(view["proc_self"].replace("EDGE_PRIVATE", ""), tasks_stack, "worker's /proc/self/environ")
    assert_clean(view["proc_parent"].replace("EDGE_PRIVATE", ""), tasks_stack, "forkserver's /proc/environ")


def test_passthrough_never_passes_secrets() -> None:
    from isthmus.plugins import jobpolicy

    environ = {"PATH": "/usr/bin", "ISTHMUS_EDGE_TOKEN": "s3cr3t-token", "SITE_A": "x",
               "SITE_COPY": "prefix-s3cr3t-token", "LC_ALL": "C", "OTHER": "y"}
    env = jobpolicy.passthrough_environment(["SITE_*", "ISTHMUS_*"], environ)
    assert env == {"PATH": "/usr/bin", "SITE_A": "x", "LC_ALL": "C"}
    assert jobpolicy.build_environment({"A": "1"}, inherit=False) == {"A": "1"}


def test_psij_and_tasks_share_the_policy_keys() -> None:
    """Same keys, same defaults: tasks got psij's executable policy (item 6c), from one place."""
    from isthmus.plugins.psij.config import PsijConfig
    from isthmus.plugins.tasks.config import TasksConfig

    psij, tasks = PsijConfig(), TasksConfig()
    for key in ("allow_any_executable", "allowed_executables", "env_passthrough", "allowed_loader_variables"):
        assert getattr(psij, key) == getattr(tasks, key), key
    assert tasks.allow_any_executable is False and "/usr/bin/*" in tasks.allowed_executables
    assert tasks.dask_addresses == [] and tasks.env_passthrough == []


# -- item 6: executables, loader variables, script text, dot-files ------------------------------------------


def _evil_script(tmp_path: Path) -> Path:
    script = tmp_path / "evil.sh"
    script.write_text("#!/bin/sh\necho pwned\n")
    script.chmod(0o755)
    return script.resolve()


def test_dotdot_does_not_bypass_the_executable_allow_list(psij_stack: Stack, tasks_stack: Stack,
                                                          tmp_path: Path) -> None:
    """``/usr/bin/../../tmp/evil.sh`` matched ``/usr/bin/*`` before it was resolved."""
    sneaky = "/usr/bin/../.." + str(_evil_script(tmp_path))
    psij = psij_client(psij_stack)
    err = refused(lambda: psij.submit_job({"executable": sneaky}, "local"), 403)
    assert "allowed_executables" in str(err)
    err = refused(lambda: psij.submit_job({"executable": "/bin/true", "directory": "/tmp/../etc"}, "local"), 403)
    assert "allowed_directories" in str(err)
    tasks = tasks_client(tasks_stack)
    err = refused(lambda: tasks.submit_tasks([{"executable": sneaky}]), 403)
    assert "allowed_executables" in str(err)


def test_tasks_have_an_executable_allow_list(tasks_stack: Stack, tmp_path: Path) -> None:
    tasks = tasks_client(tasks_stack)
    script = str(_evil_script(tmp_path))
    err = refused(lambda: tasks.submit_tasks([{"executable": "/bin/true"}, {"executable": script}]), 403)
    assert "allowed_executables" in str(err) and "allow_any_executable" in str(err)
    err = refused(lambda: tasks.submit_tasks([{"executable": "no-such-command-here"}]), 422)
    assert "PATH" in str(err)
    # what runs is the resolved path (a bare name is looked up once, on the edge)
    (uid,) = tasks.submit_tasks([{"executable": "true"}])
    tasks.wait_tasks([uid], timeout=30)
    assert tasks.get_task(uid)["spec"]["executable"] == os.path.realpath("/usr/bin/true")


def test_allow_any_executable_lets_tasks_run_anything(tmp_path: Path) -> None:
    config = {"plugins": {"tasks": {"workers": 1, "allow_any_executable": True,
                                    "allowed_loader_variables": ["LD_LIBRARY_PATH"]}}}
    with Stack(plugins=["tasks"], config=config, workdir=tmp_path / "w") as stack:
        tasks = tasks_client(stack)
        uids = tasks.submit_tasks([{"executable": str(_evil_script(tmp_path))},
                                   {"executable": "/usr/bin/env", "environment": {"LD_LIBRARY_PATH": "/opt/lib"}}])
        assert set(tasks.wait_tasks(uids, timeout=30).values()) == {"DONE"}
        assert tasks.get_task(uids[0])["stdout"] == "pwned\n"
        assert "LD_LIBRARY_PATH=/opt/lib" in tasks.get_task(uids[1])["stdout"].splitlines()
        err = refused(lambda: tasks.submit_tasks([{"executable": "/bin/true", "environment": {"LD_PRELOAD": "x"}}]),
                      422)
        assert "LD_PRELOAD" in str(err)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV", "PYTHONPATH",
                                  "PERL5OPT"])
def test_loader_variables_are_refused(psij_stack: Stack, tasks_stack: Stack, name: str) -> None:
    psij = psij_client(psij_stack)
    err = refused(lambda: psij.submit_job({"executable": "/bin/true", "environment": {name: "/tmp/x.so"}},
                                          "local"), 422)
    assert name in str(err) and "allowed_loader_variables" in str(err)
    tasks = tasks_client(tasks_stack)
    err = refused(lambda: tasks.submit_tasks([{"executable": "/bin/true", "environment": {name: "/tmp/x"}}]), 422)
    assert name in str(err) and "allowed_loader_variables" in str(err)


def test_reserved_and_bad_variable_names(psij_stack: Stack, tasks_stack: Stack) -> None:
    psij = psij_client(psij_stack)
    for env in ({"ISTHMUS_EDGE_TOKEN": "mine"}, {"GOOD\n": "x"}, {"A": "line\nnext"}):
        refused(lambda env=env: psij.submit_job({"executable": "/bin/true", "environment": env}, "local"), 422)
        refused(lambda env=env: tasks_client(tasks_stack).submit_tasks([{"executable": "/bin/true",
                                                                          "environment": env}]), 422)
    refused(lambda: tasks_client(tasks_stack).submit_tasks([{"executable": "/bin/true",
                                                              "passthrough": ["*"]}]), 422)


@pytest.mark.parametrize(("where", "value"), [
    ("attributes.account", {"attributes": {"account": "proj\n#SBATCH --uid=0"}}),
    ("attributes.queue_name", {"attributes": {"queue_name": "debug\rx"}}),
    ("attributes.project_name", {"attributes": {"project_name": "p\x7f"}}),
    ("attributes.reservation_id", {"attributes": {"reservation_id": "r\n"}}),
    ("attributes.custom_attributes", {"attributes": {"custom_attributes": {"slurm.constraint": "a\nb"}}}),
    ("attributes.custom_attributes", {"attributes": {"custom_attributes": {"slurm.constraint\n": "a"}}}),
    ("attributes.custom_attributes", {"attributes": {"custom_attributes": {"slurm.export": "ALL"}}}),
    ("attributes.custom_attributes", {"attributes": {"custom_attributes": {"slurm.exp": "ALL"}}}),
    ("name", {"name": "job\n#SBATCH --wrap=id"}),
    ("directory", {"directory": "/tmp\n"}),
    ("stdout_path", {"stdout_path": "/tmp/out\tx"}),
])
def test_control_characters_never_reach_a_batch_script(psij_stack: Stack, where: str, value: dict) -> None:
    err = refused(lambda: psij_client(psij_stack).submit_job({"executable": "/bin/true", **value}, "local"), 422)
    assert where in {e["field"] for e in err.detail["errors"]}, err.detail


def test_control_characters_in_spec_model() -> None:
    """Arguments are shell-quoted by PSI/J, so a newline stays inside its argument; NUL is refused."""
    assert JobSpecModel.model_validate({"executable": "/bin/sh", "arguments": ["-c", "echo a\necho b"]})
    with pytest.raises(ValueError, match="NUL"):
        JobSpecModel.model_validate({"executable": "/bin/sh", "arguments": ["a\x00b"]})


@pytest.mark.parametrize("path", ["~/.bashrc", "~/.ssh/authorized_keys", "/tmp/../{home}/.profile",
                                  "{home}/sub/../.bash_logout"])
def test_output_never_goes_to_home_dot_files(psij_stack: Stack, home: Path, path: str) -> None:
    target = path.format(home=str(home).lstrip("/") if path.startswith("/tmp") else home)
    for key in ("stdout_path", "stderr_path"):
        err = refused(lambda key=key: psij_client(psij_stack).submit_job(
            {"executable": "/bin/echo", "arguments": ["export PWNED=1"], key: target}, "local"), 403)
        assert "dot-file" in str(err)
    assert not (home / ".bashrc").exists() and not (home / ".ssh" / "authorized_keys").exists()


def test_output_through_a_symlink_to_a_home_dot_file(psij_stack: Stack, home: Path, tmp_path: Path) -> None:
    link = tmp_path / "innocent.log"
    link.symlink_to(home / ".bashrc")
    err = refused(lambda: psij_client(psij_stack).submit_job({"executable": "/bin/true", "stdout_path": str(link)},
                                                             "local"), 403)
    assert "dot-file" in str(err)
    # a dot-file deeper down is the job's own business
    psij = psij_client(psij_stack)
    job_id = psij.submit_job({"executable": "/bin/echo", "arguments": ["ok"], "stdout_path": "~/out/.log"},
                             "local")
    assert psij.wait(job_id, timeout=30)["state"] == "DONE"
    assert (home / "out" / ".log").read_text() == "ok\n"


# -- item 16: numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attributes", [b'{"duration": 1e400}', b'{"duration": -1e400}', b'{"duration": NaN}',
                                        b'{"duration": Infinity}', b'{"duration": "99999999:00:00"}',
                                        b'{"duration": 1e12}', b'{"node_count": 1e400}',
                                        b'{"memory": 1000000000000000000000000000000}',
                                        b'{"custom_attributes": {"slurm.nice": 1e400}}'])
def test_infinite_and_huge_numbers_are_422(psij_stack: Stack, attributes: bytes) -> None:
    psij = psij_client(psij_stack)
    body = b'{"job_spec": {"executable": "/bin/true", "attributes": ' + attributes + b'}, "executor": "local"}'
    with psij_stack.http() as http:
        resp = http.post(f"/test/psij/submit_job/{psij.sid}", content=body,
                         headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]["errors"][0]["field"].startswith("attributes.")


def test_huge_output_offset_is_422(psij_stack: Stack) -> None:
    psij = psij_client(psij_stack)
    job_id = psij.submit_job({"executable": "/bin/true"}, "local")
    err = refused(lambda: psij.get_job_status(job_id, stdout_offset=10**30), 422)
    assert "offsets" in str(err)


def test_duration_bounds() -> None:
    assert parse_duration("1-00:00:00") == 86400 and parse_duration(59.9) == 59
    for bad in (float("inf"), float("nan"), 10**30, "0", -5):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_task_numbers_are_422(tasks_stack: Stack) -> None:
    tasks = tasks_client(tasks_stack)
    with tasks_stack.http() as http:
        for body in (b'{"tasks": [{"executable": "/bin/true", "timeout": 1e400}]}',
                     b'{"tasks": [{"executable": "/bin/true", "timeout": 1e300}]}'):
            resp = http.post(f"/test/tasks/submit_tasks/{tasks.sid}", content=body,
                             headers={"content-type": "application/json"})
            assert resp.status_code == 422, resp.text
        resp = http.post(f"/test/tasks/wait_tasks/{tasks.sid}", content=b'{"timeout": NaN}',
                         headers={"content-type": "application/json"})
        assert resp.status_code == 422, resp.text
        resp = http.post(f"/test/tasks/submit_form/{tasks.sid}", content=b'{"executable": "/bin/true", "count": 1e400}',
                         headers={"content-type": "application/json"})
        assert resp.status_code == 422, resp.text


# -- item 17: no process outlives a killed edge ---------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc (ppid is field 4 of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped (it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_die_with_the_edge(tmp_path: Path) -> None:
    config = {"plugins": {"tasks": {"workers": 2}}}
    with Stack(plugins=["tasks"], env=_tasks_env(), config=config, workdir=tmp_path / "w") as stack:
        tasks = tasks_client(stack)
        uids = tasks.submit_tasks([{"executable": "/bin/sleep", "arguments": ["120"]},
                                   {"function": "tests.plugins.tasks_helpers:slow", "args": [120]}])
        poll_for(lambda: all(t["state"] == "RUNNING" for t in tasks.list_tasks() if t["uid"] in uids), 20,
                 what="tasks running")
        sleeper = poll_for(lambda: [p for p in _descendants(stack.edge_pid)
                                    if b"sleep\x00120" in Path(f"/proc/{p}/cmdline").read_bytes()],
                           10, what="the sleep task's process")
        pids = _descendants(stack.edge_pid)
        assert len(pids) >= 4, pids  # forkserver, 2 workers, the sleep task (and the resource tracker)
        assert set(sleeper) <= pids
        stack.kill_edge(signal.SIGKILL)
        poll_for(lambda: not [p for p in pids if _alive(p)], 10,
                 what=f"the edge's processes gone (left: {[p for p in pids if _alive(p)]})")


# -- item 23: only admin-listed Dask schedulers ----------------------------------------------------------------


def test_dask_address_must_be_listed_by_the_admin(tasks_stack: Stack) -> None:
    """A user-named address is refused before any connection: open and closed ports look the same."""
    bridge = tasks_stack.client().get_edge_client("test")
    answers = []
    for port in (tasks_stack.port, free_port()):  # the bridge listens there; nothing listens here
        started = time.monotonic()
        err = refused(lambda port=port: bridge.get_plugin("tasks", backend="dask", address=f"tcp://127.0.0.1:{port}"),
                      403)
        assert "dask_addresses" in str(err)
        answers.append((str(err).replace(str(port), "PORT"), time.monotonic() - started < 5))
    assert answers[0] == answers[1]


def test_listed_dask_address_is_the_only_one(tmp_path: Path) -> None:
    """With dask_addresses set, the listed scheduler passes the check and any other is refused.

    (A listed scheduler running tasks is tests/plugins/test_tasks.py::test_dask_local_cluster.)
    """
    address = f"tcp://127.0.0.1:{free_port()}"
    config = {"plugins": {"tasks": {"workers": 1, "dask_addresses": [address]}}}
    with Stack(plugins=["tasks"], config=config, workdir=tmp_path / "w") as stack:
        edge = stack.client().get_edge_client("test")
        err = refused(lambda: edge.get_plugin("tasks", backend="dask", address="tcp://127.0.0.1:1"), 403)
        assert address in str(err) and "dask_addresses" in str(err)
        err = refused(lambda: edge.get_plugin("tasks", backend="dask", address=["not", "a", "string"]), 422)
