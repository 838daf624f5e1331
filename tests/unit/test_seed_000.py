"""Seed 000's example plugin, session, client and test, as written (imports changed)."""

import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from isthmus import Plugin, PluginClient, PluginSession


class MySession(PluginSession):
    """Server-side session for MyPlugin."""

    def __init__(self, sid: str):
        super().__init__(sid)
        self._data = {}  # Per-session state

    async def do_work(self, param: str) -> dict:
        """Perform a domain-specific operation."""
        self._check_active()
        result = f"processed: {param}"
        self._data[param] = result
        # Send real-time notification to clients
        if self._notify:
            self._notify("work_status", {
                "param": param,
                "status": "done"
            })
        return {"result": result}

    async def close(self) -> dict:
        """Clean up session resources."""
        self._data = {}
        return await super().close()


class PluginMyService(Plugin):
    """MyService plugin for Radical Edge."""

    plugin_name = "myservice"  # URL namespace and registry key
    session_class = MySession  # Required!
    version = '0.1.0'

    def __init__(self, app: FastAPI, instance_name: str = "myservice"):
        super().__init__(app, instance_name)
        # Add plugin-specific routes
        self.add_route_post('do_work/{sid}', self.do_work)

    async def do_work(self, request: Request) -> JSONResponse:
        """Route handler — forwards to session method."""
        sid = request.path_params['sid']
        data = await request.json()
        return await self._forward(sid, MySession.do_work,
                                   param=data['param'])


class MyServiceClient(PluginClient):
    """Client-side interface for MyService plugin."""

    def do_work(self, param: str) -> dict:
        """Call do_work on the edge."""
        if not self.sid:
            raise RuntimeError("No active session")
        url = self._url(f"do_work/{self.sid}")
        resp = self._http.post(url, json={"param": param})
        self._raise(resp, f"do_work({param!r})")
        return resp.json()


@pytest.mark.asyncio
async def test_my_plugin():
    app = FastAPI()
    plugin = PluginMyService(app)
    client = TestClient(app)

    # Register session
    resp = client.post(f"{plugin.namespace}/register_session")
    assert resp.status_code == 200
    sid = resp.json()['sid']

    # Call plugin endpoint
    resp = client.post(
        f"{plugin.namespace}/do_work/{sid}",
        json={"param": "test"}
    )
    assert resp.status_code == 200
    assert resp.json()['result'] == "processed: test"


def test_auto_routes_and_session_lifecycle():
    app = FastAPI()
    plugin = PluginMyService(app)
    client = TestClient(app)
    for route in ("version", "list_sessions", "health", "ui_config"):
        assert client.get(f"/myservice/{route}").status_code == 200, route
    assert client.get("/myservice/version").json()["version"] == "0.1.0"
    sid = client.post("/myservice/register_session").json()["sid"]
    assert client.get("/myservice/list_sessions").json()["sessions"] == [sid]
    assert client.post("/myservice/do_work/nope", json={"param": "x"}).status_code == 404
    assert client.post(f"/myservice/unregister_session/{sid}").json()["status"] == "closed"
    closed = client.post(f"/myservice/do_work/{sid}", json={"param": "x"})
    assert closed.status_code == 410
    assert "closed" in closed.json()["detail"]
    assert plugin._sessions == {}


def test_plugin_exception_is_json_without_traceback():
    class Boom(PluginSession):
        async def explode(self):
            raise RuntimeError("disk on fire")

    class PluginBoom(Plugin):
        plugin_name = "boom"
        session_class = Boom

        def __init__(self, app):
            super().__init__(app)
            self.add_route_post("explode/{sid}", self.explode)

        async def explode(self, request):
            return await self._forward(request.path_params["sid"], Boom.explode)

    app = FastAPI()
    PluginBoom(app)
    client = TestClient(app)
    sid = client.post("/boom/register_session").json()["sid"]
    resp = client.post(f"/boom/explode/{sid}")
    assert resp.status_code == 500
    assert "disk on fire" in resp.json()["detail"]
    assert "Traceback" not in resp.text
