"""Python client of the lucid plugin (the first guide's Lucid surface).

    lucid = bridge.get_edge_client("hpc1").get_plugin("lucid")
    pilot = lucid.pilot_submit(cores=4, runtime=30, queue="batch", size=2)
    tids = lucid.task_submit([{"executable": "/bin/hostname"}] * 10, pilot_id=pilot)
    results = [lucid.task_wait(t) for t in tids]
"""

from __future__ import annotations

import time
from typing import Any, cast

from ...sdk.client import PluginClient

FINAL = ("DONE", "FAILED", "CANCELLED")


class LucidClient(PluginClient):
    plugin_name = "lucid"

    def pilot_submit(self, **description: Any) -> str:
        """Submit a pilot (a pool of up to ``size`` pilot jobs); its id."""
        return cast(str, self._post(f"pilot_submit/{self._require_sid()}", json=description)["pilot_id"])

    def pilot_status(self, pilot_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"pilot_status/{self._require_sid()}/{pilot_id}"))

    def pilot_cancel(self, pilot_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._post(f"pilot_cancel/{self._require_sid()}/{pilot_id}"))

    def task_submit(self, tasks: list[dict[str, Any]] | dict[str, Any], pilot_id: str | None = None) -> list[str]:
        """Submit one task or a list (the tasks plugin's specs) to ``pilot_id`` (default: the last pilot)."""
        body: dict[str, Any] = {"tasks": tasks if isinstance(tasks, list) else [tasks]}
        if pilot_id:
            body["pilot_id"] = pilot_id
        return cast(list[str], self._post(f"task_submit/{self._require_sid()}", json=body)["task_ids"])

    def task_wait(self, task_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The task's record once final; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            record = cast(dict[str, Any], self._get(f"task_wait/{self._require_sid()}/{task_id}",
                                                    timeout=max(0.0, min(left, 50.0))))
            if record["state"] in FINAL:
                return record
            if left <= 0:
                raise TimeoutError(f"task {task_id} is {record['state']} after {timeout} s")
