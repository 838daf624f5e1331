"""The edge's /_edge/operations (what becomes a generated MCP tool) and the tools' naming and checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.testclient import TestClient

from isthmus import Plugin
from isthmus.config import AppConfig
from isthmus.mcp.tools import operation_names, operation_schema, problems
from isthmus.runtime.host import PluginHost


class Point(BaseModel):
    x: int
    y: int = 0


class Demo(Plugin):
    plugin_id = "mcpdemo"
    plugin_name = "MCP demo"
    mcp_exclude = frozenset({"secret"})
    mcp_tools = {"scale_point": "POST point"}

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self.add_route_get("thing/{sid}/{thing_id}", self.thing)
        self.add_route_post("thing/{sid}/{thing_id}", self.thing)
        self.add_route_get("secret", self.thing)

    async def thing(self, request: Request) -> dict[str, Any]:
        """Look at one thing."""
        return {}

    def register_routes(self, router: APIRouter) -> None:
        @router.post("/point")
        async def point(p: Point, scale: int = 1) -> dict[str, int]:
            """Scale a point."""
            return {"x": p.x * scale}

        @router.get("/hidden", include_in_schema=False)
        async def hidden() -> dict[str, str]:
            return {}


def test_operations_route_lists_exposed_routes() -> None:
    host = PluginHost(AppConfig(), [f"{__name__}:Demo"], name="t")
    host.load()
    assert host.records["mcpdemo"].error is None
    with TestClient(host.app) as c:
        ops = c.get("/_edge/operations").json()["operations"]
    by = {(o["method"], o["path"]): o for o in ops}
    assert ("GET", "thing/{sid}/{thing_id}") in by and ("POST", "thing/{sid}/{thing_id}") in by
    assert by[("GET", "thing/{sid}/{thing_id}")]["description"] == "Look at one thing."
    assert by[("GET", "thing/{sid}/{thing_id}")]["params"] == ["sid", "thing_id"]
    assert not any(p in ("secret", "hidden", "register_session", "ui_config") for _, p in by)
    point = by[("POST", "point")]
    assert point["description"] == "Scale a point." and "scale" in point["query"]
    assert point["body"]["$ref"].endswith("/Point") and "Point" in point["defs"]
    names = dict((n, o) for n, o in operation_names(ops))
    assert {"thing_get", "thing_post", "scale_point", "version", "health"} <= set(names)
    assert "point" not in names  # the plugin named that tool itself (mcp_tools)
    schema = operation_schema(names["scale_point"])
    assert schema["properties"]["body"]["$ref"] == "#/$defs/Point" and "Point" in schema["$defs"]
    thing = operation_schema(names["thing_get"])
    assert thing["required"] == ["thing_id"] and "sid" not in thing["properties"]
    assert problems(thing, {"thing_id": "a"}) == []
    assert problems(thing, {}) == ["thing_id: required"]
    assert problems(thing, {"thing_id": 1, "extra": 2}) == [
        "thing_id: must be string, not int", "extra: unknown argument (known: query, thing_id)"]
