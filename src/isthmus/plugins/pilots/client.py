"""Python client of the pilots plugin: pools, and the tasks client's calls with ``pool=``.

    pilots = bridge.get_edge_client("hpc1").get_plugin("pilots")
    pilots.create_pool(name="sims", max_size=4, cores=8, walltime="01:00:00", partition="batch")
    uids = pilots.submit_tasks([{"executable": "/bin/hostname"}] * 100, pool="sims")
    pilots.wait_tasks(uids)
"""

from __future__ import annotations

from typing import Any, cast

import orjson

from ..tasks.client import PIPELINE, TasksClient
from ..tasks.wire import compact


class PilotsClient(TasksClient):
    plugin_name = "pilots"

    def register_session(self, backend: str | None = None, address: str | None = None, **kwargs: Any) -> str:
        """``pool=NAME`` makes NAME where this session's tasks go when a call names no pool."""
        return super().register_session(backend, address, **kwargs)

    def create_pool(self, name: str, **spec: Any) -> dict[str, Any]:
        """A pool: ``min_size``, ``max_size``, ``nodes``, ``cores``, ``gpus``, ``walltime``, ``partition``,
        ``account``, ``retries``, ``idle_timeout``, ``dask`` (docs/pilots.md)."""
        return cast(dict[str, Any], self._post(f"create_pool/{self._require_sid()}", json={"name": name, **spec}))

    def list_pools(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("list_pools")["pools"])

    def get_pool(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"get_pool/{name}"))

    def cancel_pool(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._post(f"cancel_pool/{self._require_sid()}/{name}"))

    def submit_tasks(self, tasks: list[dict[str, Any]], pool: str | None = None) -> list[str]:
        """Queue tasks (the tasks plugin's specs) in ``pool`` (default: the session's); their uids."""
        uids: list[str] = []
        params = {"pool": pool} if pool else None
        for start in range(0, len(tasks), PIPELINE):
            resp = self._http.post(self._url(f"submit_tasks/{self._require_sid()}"), params=params,
                                   content=orjson.dumps(compact(tasks[start:start + PIPELINE])),
                                   headers={"content-type": "application/json"})
            self._raise(resp, "submit_tasks")
            uids += resp.json()["uids"]
        return uids
