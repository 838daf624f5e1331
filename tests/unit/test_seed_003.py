"""Seed 003's example plugin, router, config model and tests, as written (imports changed).

Mapping of the guide's imports: ``RackscopePlugin`` → ``isthmus.Plugin``; its
``registry`` → ``isthmus.sdk.registry.registry``; ``get_topology`` / ``get_app_config``
→ ``isthmus.get_topology`` / ``isthmus.get_app_config``; ``AppConfig`` →
``isthmus.config.AppConfig``. The guide's test fetches ``/api/myplugin/status`` while its
router is mounted at ``/api/my-plugin``; we use the mounted path.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from isthmus import MenuItem, MenuSection, get_app_config, get_topology
from isthmus import Plugin as RackscopePlugin
from isthmus.config import AppConfig
from isthmus.sdk.plugin import registry

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/status")
async def get_status(
    topology: dict = Depends(get_topology),
    config: AppConfig = Depends(get_app_config),
):
    return {"status": "ok", "nodes": len(topology)}


class MyPluginConfig(BaseModel):
    enabled: bool = True
    my_setting: str = "default"
    interval_seconds: int = 60


class MyPlugin(RackscopePlugin):
    """My custom Rackscope plugin."""

    config_model = MyPluginConfig

    @property
    def plugin_id(self) -> str:
        return "my-plugin"

    @property
    def plugin_name(self) -> str:
        return "My Plugin"

    def register_routes(self, app: FastAPI) -> None:
        app.include_router(router, prefix="/api/my-plugin", tags=["my-plugin"])

    def register_menu_sections(self) -> list[MenuSection]:
        return [
            MenuSection(
                id="my-plugin",
                label="My Plugin",
                order=100,  # lower = appears first
                items=[
                    MenuItem(
                        id="my-plugin-home",
                        label="Home",
                        path="/my-plugin",
                        icon="Home",
                    ),
                ],
            )
        ]

    async def on_startup(self) -> None:
        # Initialize resources (connections, caches, etc.)
        pass

    async def on_shutdown(self) -> None:
        # Clean up resources
        pass

    async def on_config_reload(self, app_config: AppConfig) -> None:
        logger.info(f"[{self.plugin_id}] Config reloaded")


app = FastAPI()

# Register once per test session (idempotent guard)
if not registry.get_plugin("my-plugin"):
    _plugin = MyPlugin()
    registry.register(_plugin)
    _plugin.register_routes(app)

client = TestClient(app)


def test_plugin_status():
    """Plugin status endpoint is reachable."""
    response = client.get("/api/my-plugin/status")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "nodes": 0}


def test_plugin_in_registry():
    """Plugin is correctly registered."""
    plugin = registry.get_plugin("my-plugin")
    assert plugin is not None
    assert plugin.plugin_id == "my-plugin"


def test_metadata_maps_onto_one_model():
    plugin = registry.get_plugin("my-plugin")
    assert plugin.instance_name == "my-plugin" and plugin.namespace == "/my-plugin"
    assert MyPlugin.key() == "my-plugin"
    assert MyPlugin.display_title() == "My Plugin"
    assert plugin.config == MyPluginConfig()
    manifest = plugin.manifest()
    assert manifest["title"] == "My Plugin"
    assert manifest["menu"][0]["items"][0]["path"] == "/my-plugin"


def test_namespaced_mount_by_a_host(tmp_path):
    """Inside a host, register_routes gets a router already mounted at the namespace."""
    from isthmus.runtime.host import PluginHost

    host = PluginHost(AppConfig(), [f"{__name__}:MyPlugin"], name="t")
    host.load()
    assert host.records["my-plugin"].error is None
    with TestClient(host.app) as c:
        assert c.get("/my-plugin/api/my-plugin/status").json()["status"] == "ok"
        assert c.get("/my-plugin/version").status_code == 200
