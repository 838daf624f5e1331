"""Python client of the workflows plugin (on the bridge: ``bridge.get_edge_client("bridge")``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from ...errors import ClientError
from ...sdk.client import PluginClient

FINAL = frozenset({"DONE", "FAILED", "CANCELLED"})


class WorkflowsClient(PluginClient):
    plugin_name = "workflows"

    def _again(self, call: Any) -> Any:
        """Workflows outlive the bridge's sessions: after a bridge restart, register again once."""
        try:
            return call()
        except ClientError as exc:
            if exc.status_code not in (404, 410) or "register" not in str(exc):
                raise
            self.register_session()
            return call()

    def submit(self, document: str | dict[str, Any] | Path, params: dict[str, Any] | None = None) -> str:
        """Start a workflow (a YAML/JSON text, a mapping, or a file); returns its id."""
        if isinstance(document, Path):
            document = document.read_text()
        body = {"document": document, "params": params or {}}
        return cast(str, self._again(lambda: self._post(f"submit_workflow/{self._require_sid()}",
                                                       json=body))["workflow_id"])

    def validate(self, document: str | dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"document": document, "params": params or {}}
        return cast(dict[str, Any], self._again(lambda: self._post(f"validate_workflow/{self._require_sid()}",
                                                                  json=body)))

    def status(self, workflow_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._again(
            lambda: self._get(f"workflow_status/{self._require_sid()}/{workflow_id}")))

    def list(self, limit: int | None = None, before: float | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self._again(
            lambda: self._get(f"list_workflows/{self._require_sid()}", limit=limit, before=before)))

    def cancel(self, workflow_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._again(
            lambda: self._post(f"cancel_workflow/{self._require_sid()}/{workflow_id}")))

    def wait(self, workflow_id: str, timeout: float | None = None, interval: float = 1.0) -> dict[str, Any]:
        """Poll until the workflow is DONE, FAILED or CANCELLED; ``TimeoutError`` after ``timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(workflow_id)
            if status["state"] in FINAL:
                return status
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"workflow {workflow_id} is still {status['state']} after {timeout} s")
            time.sleep(interval)
