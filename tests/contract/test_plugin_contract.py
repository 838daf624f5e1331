"""One contract, every installed plugin (built-in or third-party).

Metadata present, routes inside the plugin's namespace only, auto routes answer,
menu shape valid, config defaults valid with a rendering JSON schema, and a disabled
plugin is not imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from isthmus.config import AppConfig
from isthmus.runtime.host import PluginHost
from isthmus.sdk.menu import MenuSection
from isthmus.sdk.plugin import load_class
from isthmus.sdk.registry import entry_points

INSTALLED = sorted(entry_points())


def route_paths(routes: list, prefix: str = "") -> list[str]:
    """Full paths of every route, through included routers (flattened or lazy, by FastAPI version)."""
    out: list[str] = []
    for route in routes:
        ctx = getattr(route, "include_context", None)
        if ctx is not None:
            out += route_paths(ctx.included_router.routes, prefix + ctx.prefix)
        elif isinstance(route, Mount):
            out += route_paths(route.routes, prefix + route.path)
        else:
            out.append(prefix + getattr(route, "path", ""))
    return out


def test_builtins_are_installed() -> None:
    assert {"sysinfo", "queue_info", "psij", "tasks", "staging", "cluster", "simulator"} <= set(INSTALLED)


@pytest.mark.parametrize("name", INSTALLED)
def test_metadata(name: str) -> None:
    cls = load_class(name)
    assert cls.key() == name, "the entry-point name is the plugin's key"
    assert isinstance(cls.version, str) and cls.version
    assert cls.display_title()
    assert cls.description or (cls.ui_config or {}).get("description"), "say what the plugin is for"


@pytest.mark.parametrize("name", INSTALLED)
def test_routes_menu_config_and_auto_routes(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    host = PluginHost(AppConfig(state_dir=tmp_path / "state"), [name], name="contract")
    host.load()
    record = host.records[name]
    assert record.error is None, record.error
    plugin = record.plugin
    paths = [p for p in route_paths(host.app.routes) if not p.startswith("/_edge/")]
    assert f"/{name}/version" in paths
    for path in paths:
        assert path.startswith(f"/{name}/"), f"route {path} is outside /{name}/"
    for section in plugin.register_menu_sections():
        MenuSection.model_validate(section.model_dump())
    model = type(plugin).config_model
    if model is not None:
        model()  # defaults are valid
        assert model.model_json_schema()["type"] == "object"
    host.app.router.lifespan_context = host.lifespan
    with TestClient(host.app) as client:
        assert client.get(f"/{name}/version").json()["version"] == plugin.version
        assert client.get(f"/{name}/health").json()["status"] == "ok"
        ui = client.get(f"/{name}/ui_config")
        assert ui.status_code == 200 and isinstance(ui.json(), dict)
        sid = client.post(f"/{name}/register_session", json={}).json()["sid"]
        assert sid in client.get(f"/{name}/list_sessions").json()["sessions"]
        assert client.post(f"/{name}/unregister_session/{sid}").status_code == 200


@pytest.mark.parametrize("name", INSTALLED)
def test_disabled_is_not_imported(name: str, tmp_path) -> None:
    module = entry_points()[name].value.partition(":")[0]
    code = (
        "import sys\n"
        "from isthmus.config import AppConfig\n"
        "from isthmus.runtime.host import PluginHost\n"
        f"cfg = AppConfig(plugins={{{name!r}: {{'enabled': False}}}})\n"
        f"host = PluginHost(cfg, None, name='x'); host.load()\n"
        f"assert {module!r} not in sys.modules, 'imported while disabled'\n"
        f"assert {name!r} not in host.manifests()\n"
        "print('ok')\n"
    )
    env_args = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120}
    result = subprocess.run([sys.executable, "-c", code], **env_args)
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]
