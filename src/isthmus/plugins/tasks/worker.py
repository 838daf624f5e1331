"""What runs in worker processes (local pool, Dask workers): a chunk of tasks at a time.

Kept import-light: workers start fast and run many tasks per round trip.

No secrets reach task code: a worker removes ``ISTHMUS_*`` variables from its environment
before it runs anything, and each executable gets a clean environment (the admin's
passthrough allow-list and the task's own ``environment``, see
:mod:`isthmus.plugins.jobpolicy`). Pool workers the edge owns (:func:`init_pool_worker`)
also die with their parent, killing the executable they run, so a ``kill -9`` of the edge
leaves no process behind.
"""

from __future__ import annotations

import base64
import functools
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from ..jobpolicy import build_environment, passthrough_environment, scrub_environ

TASK_UID_VAR = "TASK_UID"  # marks a task's processes, so cancel can find them; not an ISTHMUS_ secret
PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 0.5

_functions: dict[str, Callable[..., Any]] = {}
_current: subprocess.Popen[bytes] | None = None  # the executable this worker runs now
_scrubbed = False


def _scrub_once() -> None:
    """Remove secrets from this process's environment before the first task runs here."""
    global _scrubbed
    if not _scrubbed:
        scrub_environ()
        _base_environment.cache_clear()
        _scrubbed = True


@functools.lru_cache(maxsize=8)
def _base_environment(passthrough: tuple[str, ...]) -> dict[str, str]:
    """The allow-listed variables of this worker's environment; computed once per policy."""
    return passthrough_environment(passthrough)


def _kill_current() -> None:
    proc = _current
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the task runs in its own process group: all of it goes
        except OSError:
            pass


def _die(*_: Any) -> None:
    """Leave now, and take the running executable along (parent gone, or SIGTERM from the pool)."""
    _kill_current()
    os._exit(1)


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` when the parent exits (``prctl(PR_SET_PDEATHSIG)``)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """Fallback for PR_SET_PDEATHSIG (other systems, races): a changed parent pid means it died."""
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if os.getppid() != parent:
            _die()


def _release_forkserver_pipe() -> None:
    """Close this worker's copy of the forkserver's "alive" pipe.

    The forkserver exits when every holder of that pipe's write end is gone. Its children
    inherit a copy, so while they live the forkserver never notices that the edge died,
    and they never notice either (their parent, the forkserver, lives on): both outlive a
    ``kill -9`` of the edge. Without the copy, the edge is the only holder, the forkserver
    exits with it, and the workers follow through their parent-death signal.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and isinstance(fd, int):
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def init_pool_worker() -> None:
    """Initializer of the edge's own pool workers: die with the parent, hold no secrets.

    Without it, a ``kill -9`` of the edge leaves the forkserver and its workers (and what
    they run) alive forever.
    """
    _release_forkserver_pipe()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, _die)
    set_parent_death_signal(signal.SIGTERM)
    if parent == 1 or os.getppid() != parent:  # the parent died before the death signal was armed
        _die()
    threading.Thread(target=_watch_parent, args=(parent,), name="isthmus-parent-watch", daemon=True).start()
    _scrub_once()


def _tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode("utf-8", errors="replace") if limit else ""


def _function(task: dict[str, Any]) -> Callable[..., Any]:
    spec = task["function"]
    if task.get("pickled"):
        import cloudpickle

        return cast(Callable[..., Any], cloudpickle.loads(base64.b64decode(spec)))  # cloudpickle is untyped
    fn = _functions.get(spec)
    if fn is None:
        module, _, qualname = spec.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        _functions[spec] = fn = obj
    return fn


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def run_function(task: dict[str, Any]) -> dict[str, Any]:
    timeout = task.get("timeout")
    try:
        fn = _function(task)
        if timeout:
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, float(timeout))
        try:
            value = fn(*task.get("args", ()), **task.get("kwargs", {}))
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return {"state": "DONE", "return_value": _jsonable(value)}
    except _Timeout:
        return {"state": "FAILED", "exception": f"timed out after {timeout} s"}
    except BaseException as exc:  # noqa: BLE001 - the task's failure is its result
        return {"state": "FAILED", "exception": f"{type(exc).__name__}: {exc}"}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()


def run_executable(task: dict[str, Any], tail: int) -> dict[str, Any]:
    """Run one executable with a clean environment, in its own process group (so all of it can be killed)."""
    global _current
    marker = task.get("cancel_marker")
    if marker and os.path.exists(marker):  # cancelled while it waited in this chunk
        return {"state": "CANCELLED", "exit_code": None}
    spec_env = {str(k): str(v) for k, v in (task.get("environment") or {}).items()}
    env = build_environment(spec_env, base=_base_environment(tuple(task.get("passthrough") or ())))
    if task.get("uid"):
        env[TASK_UID_VAR] = task["uid"]
    timeout = task.get("timeout")
    try:
        proc = subprocess.Popen([task["executable"], *map(str, task.get("arguments", ()))], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=task.get("directory"),
                                env=env, process_group=0)
    except (OSError, ValueError) as exc:
        return {"state": "FAILED", "exit_code": None, "exception": f"cannot run {task['executable']}: {exc}"}
    _current = proc
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return {"state": "FAILED", "exit_code": None, "exception": f"timed out after {timeout} s",
                    "stdout": _tail(out or b"", tail), "stderr": _tail(err or b"", tail)}
    finally:
        _current = None
    return {"state": "DONE" if proc.returncode == 0 else "FAILED", "exit_code": proc.returncode,
            "stdout": _tail(out, tail), "stderr": _tail(err, tail)}


def run_chunk(tasks: list[dict[str, Any]], tail: int = 4096) -> list[dict[str, Any]]:
    """Run tasks one after another in this process; one result per task, in order."""
    _scrub_once()  # Dask workers have no initializer: the first chunk does it
    return [run_function(t) if "function" in t else run_executable(t, tail) for t in tasks]
