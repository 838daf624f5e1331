"""Python client of the psij plugin.

Job states are the project's one vocabulary (``isthmus.jobstates``): NEW, PENDING, HELD,
RUNNING, then DONE, FAILED or CANCELLED. An edge from before it answers with PSI/J's names
(QUEUED, ACTIVE, COMPLETED, CANCELED); ``wait`` understands both.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from ...jobstates import FINAL as FINAL_STATES
from ...jobstates import parse
from ...sdk.client import PluginClient

FINAL = tuple(state.value for state in FINAL_STATES)  # DONE, FAILED, CANCELLED


def is_final(state: Any) -> bool:
    """Whether a state read from an answer or a notification is final (ours or, from an older edge, PSI/J's)."""
    return isinstance(state, str) and parse(state).final


class PsijClient(PluginClient):
    plugin_name = "psij"

    def submit_job(self, job_spec: dict[str, Any], executor: str = "auto") -> str:
        """Submit; returns the job id at once (the job starts NEW and moves on by itself)."""
        body = {"job_spec": job_spec, "executor": executor}
        return cast(str, self._post(f"submit_job/{self._require_sid()}", json=body)["job_id"])

    def get_job_status(self, job_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> dict[str, Any]:
        """State, exit code, times, native id, and new output since the offsets."""
        status = self._get(f"job_status/{self._require_sid()}/{job_id}", stdout_offset=stdout_offset,
                           stderr_offset=stderr_offset)
        return cast(dict[str, Any], status)

    def list_jobs(self, limit: int | None = None, before: str | None = None,
                  state: str | None = None) -> list[dict[str, Any]]:
        """Newest first, one page: at most ``limit`` (default and most: 1000) jobs older than the job ``before``;
        ``state`` keeps jobs in these states (``"RUNNING"``, or several: ``"RUNNING,PENDING"``)."""
        return cast(list[dict[str, Any]], self._get(f"list_jobs/{self._require_sid()}", limit=limit,
                                                    before=before, state=state)["jobs"])

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._post(f"cancel_job/{self._require_sid()}/{job_id}"))

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 2.0) -> dict[str, Any]:
        """Block until the job is final; driven by job_status notifications, polling as a fallback."""
        done = threading.Event()
        handle = None
        if self._bridge is not None:
            handle = self.register_callback(
                lambda _e, _p, _t, data: done.set() if data.get("job_id") == job_id and is_final(data.get("state"))
                else None, topic="job_status")
            self._bridge.wait_for_events(5)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                status = self.get_job_status(job_id)
                if is_final(status["state"]):
                    return status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job_id} is still {status['state']} after {timeout} s")
                done.wait(poll if left is None else min(poll, left))
        finally:
            if handle is not None and self._bridge is not None:
                self._bridge.unregister_callback(handle)

    def tail(self, job_id: str) -> tuple[str, str]:
        """All output so far (stdout, stderr), read chunk by chunk."""
        out, err, so, se = [], [], 0, 0
        while True:
            status = self.get_job_status(job_id, so, se)
            out.append(status["stdout"])
            err.append(status["stderr"])
            if status["stdout_offset"] == so and status["stderr_offset"] == se:
                return "".join(out), "".join(err)
            so, se = status["stdout_offset"], status["stderr_offset"]

