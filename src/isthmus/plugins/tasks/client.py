"""Python client of the tasks plugin."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import cloudpickle
import orjson

from ...sdk.client import PluginClient
from .wire import compact

FINAL = ("DONE", "FAILED", "CANCELLED")
PIPELINE = 4096  # tasks per request for large batches


class TasksClient(PluginClient):
    plugin_name = "tasks"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._handle: int | None = None

    def register_session(self, backend: str | None = None, address: str | None = None, **kwargs: Any) -> str:
        args = {k: v for k, v in {"backend": backend, "address": address, **kwargs}.items() if v is not None}
        sid = super().register_session(**args)
        self._follow()
        return sid

    # -- events ---------------------------------------------------------------------------------

    def _follow(self) -> None:
        if self._bridge is None or self._handle is not None:
            return

        def on_event(_edge: str, _plugin: str, topic: str, data: Any) -> None:
            entries = data.get("tasks", []) if topic == "task_status_batch" else [data]
            with self._changed:
                for entry in entries:
                    self._states[entry["uid"]] = entry["state"]
                self._changed.notify_all()

        self._handle = self._bridge.register_callback(edge_id=self.edge, plugin_name=self.plugin, callback=on_event)
        self._bridge.wait_for_events(10)

    # -- submission -----------------------------------------------------------------------------

    def submit_tasks(self, tasks: list[dict[str, Any]]) -> list[str]:
        """Submit tasks (executables or functions); returns their uids. Large lists go in pipelined requests."""
        uids: list[str] = []
        for start in range(0, len(tasks), PIPELINE):
            batch = compact(tasks[start:start + PIPELINE])
            resp = self._http.post(self._url(f"submit_tasks/{self._require_sid()}"), content=orjson.dumps(batch),
                                   headers={"content-type": "application/json"})
            self._raise(resp, "submit_tasks")
            uids += resp.json()["uids"]
        return uids

    @staticmethod
    def function_task(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A task dict for ``fn(*args, **kwargs)``: by name when importable, else pickled."""
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        if module and module != "__main__" and "<" not in qualname:
            return {"function": f"{module}:{qualname}", "args": list(args), "kwargs": kwargs}
        payload = base64.b64encode(cloudpickle.dumps(fn)).decode()
        return {"function": payload, "pickled": True, "args": list(args), "kwargs": kwargs}

    def submit_function(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        return self.submit_tasks([self.function_task(fn, *args, **kwargs)])[0]

    # -- reading --------------------------------------------------------------------------------

    def list_tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get(f"list_tasks/{self._require_sid()}", state=state)["tasks"])

    def get_task(self, uid: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"get_task/{self._require_sid()}/{uid}"))

    def cancel_task(self, uid: str) -> int:
        return cast(int, self._post(f"cancel_task/{self._require_sid()}/{uid}")["cancelled"])

    def cancel_all_tasks(self) -> int:
        return cast(int, self._post(f"cancel_all_tasks/{self._require_sid()}")["cancelled"])

    def _refresh(self) -> None:
        snapshot = self.list_tasks()
        with self._changed:
            for entry in snapshot:
                if self._states.get(entry["uid"]) not in FINAL:
                    self._states[entry["uid"]] = entry["state"]

    def wait_tasks(self, uids: list[str] | None = None, timeout: float | None = None) -> dict[str, str]:
        """Block until the tasks (default: all of this session's) are final; returns uid → state.

        Driven by task_status events. When no event arrives for 2 s (or there is no event
        stream), it asks the edge, which long-polls, and re-reads the states.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._refresh()
        with self._lock:
            wanted = list(uids) if uids is not None else list(self._states)
        while True:
            with self._changed:
                pending = [u for u in wanted if self._states.get(u) not in FINAL]
                if not pending:
                    return {u: self._states[u] for u in wanted}
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{len(pending)} of {len(wanted)} tasks not final after {timeout} s")
                if self._handle is not None and self._changed.wait(min(2.0, left) if left is not None else 2.0):
                    continue
            poll = min(5.0 if self._handle is not None else 30.0, left if left is not None else 30.0)
            self._post(f"wait_tasks/{self._require_sid()}", json={"uids": pending, "timeout": max(poll, 0.1)})
            self._refresh()

    def close(self) -> None:
        if self._handle is not None and self._bridge is not None:
            self._bridge.unregister_callback(self._handle)
            self._handle = None
        super().close()
