"""What runs in worker processes (local pool, Dask workers): a chunk of tasks at a time.

Kept import-light: workers start fast and run many tasks per round trip.
"""

from __future__ import annotations

import base64
import importlib
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

_functions: dict[str, Callable[..., Any]] = {}


def _tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode("utf-8", errors="replace") if limit else ""


def _function(task: dict[str, Any]) -> Callable[..., Any]:
    spec = task["function"]
    if task.get("pickled"):
        import cloudpickle

        return cloudpickle.loads(base64.b64decode(spec))
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


def run_executable(task: dict[str, Any], tail: int) -> dict[str, Any]:
    marker = task.get("cancel_marker")
    if marker and os.path.exists(marker):  # cancelled while it waited in this chunk
        return {"state": "CANCELLED", "exit_code": None}
    env = None
    if task.get("environment"):
        env = {**os.environ, **{k: str(v) for k, v in task["environment"].items()}}
    if task.get("uid"):
        env = {**(env or os.environ), "ISTHMUS_TASK_UID": task["uid"]}
    try:
        proc = subprocess.run([task["executable"], *map(str, task.get("arguments", ()))], capture_output=True,
                              cwd=task.get("directory"), env=env, timeout=task.get("timeout"), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return {"state": "FAILED", "exit_code": None, "exception": f"timed out after {task.get('timeout')} s",
                "stdout": _tail(exc.stdout or b"", tail), "stderr": _tail(exc.stderr or b"", tail)}
    except OSError as exc:
        return {"state": "FAILED", "exit_code": None, "exception": f"cannot run {task['executable']}: {exc}"}
    return {"state": "DONE" if proc.returncode == 0 else "FAILED", "exit_code": proc.returncode,
            "stdout": _tail(proc.stdout, tail), "stderr": _tail(proc.stderr, tail)}


def run_chunk(tasks: list[dict[str, Any]], tail: int = 4096) -> list[dict[str, Any]]:
    """Run tasks one after another in this process; one result per task, in order."""
    return [run_function(t) if "function" in t else run_executable(t, tail) for t in tasks]
