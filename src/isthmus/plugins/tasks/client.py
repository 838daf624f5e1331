"""Python client of the tasks plugin.

Every call costs what it asks about, never what the session holds: ``wait_tasks(uids)``
follows the uids it was given (task_status events, then the edge's long poll for those uids
only), and listing goes page by page.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import cloudpickle
import orjson

from ...errors import ClientError
from ...sdk.client import PluginClient
from .wire import GET_TASKS_MAX, compact

FINAL = ("DONE", "FAILED", "CANCELLED")
PIPELINE = 4096  # tasks per request for large batches
PAGE = 10_000  # tasks per list_tasks request when reading every page
CACHE = 1 << 17  # final states from events kept for a later wait_tasks; beyond, the oldest go (and are asked for)
FIRST_QUIET = 0.5  # seconds without news of awaited tasks before the edge is first asked about them
QUIET = 2.0  # ... and between later questions (the edge long-polls: it answers when they are final)


class _Waiter:
    """One wait_tasks call: the uids it still waits for and the final states it has."""

    __slots__ = ("pending", "states")

    def __init__(self, uids: list[str]) -> None:
        self.pending = dict.fromkeys(uids)
        self.states: dict[str, str] = {}

    def settle(self, uid: str, state: str) -> bool:
        if uid not in self.pending:
            return False
        del self.pending[uid]
        self.states[uid] = state
        return True


class TasksClient(PluginClient):
    plugin_name = "tasks"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._final: OrderedDict[str, str] = OrderedDict()  # uid -> final state, from this session's events
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters: list[_Waiter] = []  # wait_tasks calls in progress (any thread)
        self._handle: int | None = None

    def register_session(self, backend: str | None = None, address: str | None = None, **kwargs: Any) -> str:
        args = {k: v for k, v in {"backend": backend, "address": address, **kwargs}.items() if v is not None}
        sid = super().register_session(**args)
        with self._lock:
            self._final.clear()  # uids are per session: a new session reuses them
        self._follow()
        return sid

    # -- events ---------------------------------------------------------------------------------

    def _follow(self) -> None:
        if self._bridge is None or self._handle is not None:
            return

        def on_event(_edge: str, _plugin: str, topic: str, data: Any) -> None:
            # an owner's clients see all its sessions' events, and uids are per session: keep this session's
            # (an edge from before events carried "sid" sends none)
            if not isinstance(data, dict) or data.get("sid", self.sid) != self.sid:
                return
            entries = data.get("tasks", []) if topic == "task_status_batch" else [data]
            settled = False
            with self._changed:
                for entry in entries:
                    uid, state = entry.get("uid"), entry.get("state")
                    if state in FINAL and isinstance(uid, str):
                        self._final[uid] = state
                        for waiter in self._waiters:  # O(waiters) per entry, never O(what they wait for)
                            settled = waiter.settle(uid, state) or settled
                while len(self._final) > CACHE:
                    self._final.popitem(last=False)
                if settled:
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

    def list_tasks(self, state: str | None = None, limit: int | None = None,
                   after: str | None = None) -> list[dict[str, Any]]:
        """Tasks in uid order, as ``{uid, state, exit_code}``.

        With ``limit``: one page of at most that many (up to 10,000) after the uid ``after``;
        pass the last uid of a page to get the next. Without: every task (after ``after``),
        read page by page.
        """
        if limit is None:
            return list(self.iter_tasks(state, after))
        return cast(list[dict[str, Any]], self.list_page(state, limit, after)["tasks"])

    def list_page(self, state: str | None = None, limit: int | None = None,
                  after: str | None = None) -> dict[str, Any]:
        """One answer of ``list_tasks/{sid}``: ``tasks``, ``counts`` per state, ``forgotten``, ``next`` (cursor)."""
        return cast(dict[str, Any], self._get(f"list_tasks/{self._require_sid()}", state=state, limit=limit,
                                              after=after))

    def iter_tasks(self, state: str | None = None, after: str | None = None) -> Iterator[dict[str, Any]]:
        """Every task (of ``state``) after the uid ``after``, fetched a page at a time."""
        while True:
            page = self.list_page(state, PAGE, after)
            yield from page["tasks"]
            after = page.get("next")
            if not after:
                return

    def task_states(self, uids: Iterable[str]) -> dict[str, str]:
        """uid → current state of these tasks, in one request (forgotten ones report their final state)."""
        answer = self._post(f"task_states/{self._require_sid()}", json={"uids": list(uids)})
        self._raise_unknown(answer.get("unknown"))
        return {t["uid"]: t["state"] for t in answer["tasks"]}

    def get_task(self, uid: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"get_task/{self._require_sid()}/{uid}"))

    def get_tasks(self, uids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """uid → whole record (as ``get_task``) of these tasks, GET_TASKS_MAX per request; the
        edge's answer-size bound is followed (its ``more``). A uid the session never had, or
        forgot, is a ClientError (404), as with ``get_task``."""
        wanted = list(uids)
        records: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), GET_TASKS_MAX):
            ask = wanted[start:start + GET_TASKS_MAX]
            while ask:
                answer = self._post(f"get_tasks/{self._require_sid()}", json={"uids": ask})
                self._raise_unknown(answer.get("unknown"))
                if forgotten := answer.get("forgotten"):
                    raise ClientError(f"tasks {', '.join(list(forgotten)[:5])} ended and were forgotten "
                                      "(the edge's max_tasks)", status_code=404, detail={"forgotten": forgotten})
                records.update((t["uid"], t) for t in answer["tasks"])
                ask = answer.get("more") or []
        return records

    def cancel_task(self, uid: str) -> int:
        return cast(int, self._post(f"cancel_task/{self._require_sid()}/{uid}")["cancelled"])

    def cancel_all_tasks(self) -> int:
        return cast(int, self._post(f"cancel_all_tasks/{self._require_sid()}")["cancelled"])

    @staticmethod
    def _raise_unknown(unknown: Any) -> None:
        if unknown:
            raise ClientError(f"no task {', '.join(map(str, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} "
                              "in this session", status_code=404, detail={"unknown": unknown})

    def wait_tasks(self, uids: list[str] | None = None, timeout: float | None = None) -> dict[str, str]:
        """Block until the tasks are final; returns uid → state (DONE, FAILED or CANCELLED).

        Default: every task of the session (the edge says when none is left unfinished, then
        they are listed). With ``uids``, only those are followed: task_status events of this
        session first; after 0.5 s without news of them (then 2 s; at once without an event
        stream) the edge is asked about them alone, and long-polls until they are final. A
        uid the session never had is a ClientError (404).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if uids is None:
            return self._wait_all(deadline, timeout)
        wanted = list(uids)
        waiter = _Waiter(wanted)
        events = self._handle is not None
        with self._changed:
            for uid in [u for u in waiter.pending if u in self._final]:  # seen final before this call
                waiter.settle(uid, self._final[uid])
            self._waiters.append(waiter)
        try:
            news = time.monotonic()  # when this wait last learnt something (or asked the edge)
            patience = FIRST_QUIET
            while True:
                with self._changed:
                    # the check and the wait hold the lock together: no event slips in between
                    if not waiter.pending:
                        return {u: waiter.states[u] for u in wanted}
                    now = time.monotonic()
                    left = None if deadline is None else deadline - now
                    if left is not None and left <= 0:
                        raise TimeoutError(f"{len(waiter.pending)} of {len(wanted)} tasks not final after "
                                           f"{timeout} s")
                    quiet = patience - (now - news)
                    if events and quiet > 0:
                        before = len(waiter.pending)
                        self._changed.wait(quiet if left is None else min(quiet, left))
                        if len(waiter.pending) < before:
                            news = time.monotonic()
                        continue
                    pending = list(waiter.pending)
                poll = min(5.0 if events else 30.0, left if left is not None else 30.0)
                answer = self._post(f"wait_tasks/{self._require_sid()}", json={"uids": pending,
                                                                               "timeout": max(poll, 0.1)})
                if "states" not in answer:  # an edge from before #12 says only done: read the states
                    wanted_now = set(pending)
                    answer["states"] = {t["uid"]: t["state"] for t in self.iter_tasks() if t["uid"] in wanted_now}
                self._raise_unknown(answer.get("unknown"))
                with self._changed:
                    for uid, state in answer["states"].items():
                        if state in FINAL:
                            waiter.settle(uid, state)
                news, patience = time.monotonic(), QUIET
        finally:
            with self._changed:
                self._waiters.remove(waiter)

    def _wait_all(self, deadline: float | None, timeout: float | None) -> dict[str, str]:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"tasks of session {self.sid} not final after {timeout} s")
            poll = min(30.0, left) if left is not None else 30.0
            if self._post(f"wait_tasks/{self._require_sid()}", json={"timeout": max(poll, 0.1)}).get("done"):
                return {t["uid"]: t["state"] for t in self.iter_tasks()}

    def close(self) -> None:
        if self._handle is not None and self._bridge is not None:
            self._bridge.unregister_callback(self._handle)
            self._handle = None
        super().close()
