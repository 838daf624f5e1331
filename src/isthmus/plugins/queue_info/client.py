"""Python client of the queue_info plugin."""

from __future__ import annotations

from typing import Any, cast

from ...sdk.client import PluginClient


def _flag(force: bool) -> str | None:
    return "true" if force else None


class QueueInfoClient(PluginClient):
    plugin_name = "queue_info"

    def backend(self) -> str:
        return cast(str, self._get("backend")["backend"])

    def job_allocation(self) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, self._get("job_allocation")["allocation"])

    def get_info(self, user: str | None = None, force: bool = False) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"get_info/{self._require_sid()}", user=user, force=_flag(force)))

    def list_jobs(self, queue: str, user: str | None = None, force: bool = False) -> list[dict[str, Any]]:
        jobs = self._get(f"list_jobs/{self._require_sid()}", queue=queue, user=user, force=_flag(force))["jobs"]
        return cast(list[dict[str, Any]], jobs)

    def list_all_jobs(self, user: str | None = None, force: bool = False) -> list[dict[str, Any]]:
        jobs = self._get(f"list_all_jobs/{self._require_sid()}", user=user, force=_flag(force))["jobs"]
        return cast(list[dict[str, Any]], jobs)

    def list_allocations(self, user: str | None = None, force: bool = False) -> list[dict[str, Any]]:
        allocations = self._get(f"list_allocations/{self._require_sid()}", user=user, force=_flag(force))["allocations"]
        return cast(list[dict[str, Any]], allocations)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._post(f"cancel_job/{self._require_sid()}", json={"job_id": str(job_id)}))
