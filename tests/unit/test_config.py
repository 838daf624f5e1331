"""The typed config model: bridge/edge sections, unknown keys, env overrides, flags, plugin documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from isthmus import cli
from isthmus.config import (
    AppConfig,
    BridgeConfig,
    EdgeConfig,
    check_plugin_document,
    load_app_config,
    load_plugin_config,
)
from isthmus.errors import ConfigError

# Every field and default of the dataclass BridgeSettings was before it became BridgeConfig.
OLD_BRIDGE_SETTINGS: dict[str, Any] = {
    "host": "127.0.0.1", "port": 8000, "request_timeout": 60.0, "max_body": 64 * 1024**3, "tls": False,
    "event_ring": 10_000, "event_ring_bytes": 32 * 1024 * 1024, "max_event": 1024 * 1024,
    "event_queue": 8 * 1024 * 1024, "max_header_bytes": 64 * 1024, "header_timeout": 10.0,
    "body_timeout": 30.0, "idle_timeout": 30, "preauth_per_address": 256,
    # several bridges (#12): all off by default
    "redis": None, "advertise_url": None, "bridge_id": None,
    # accountability (#13): audit log at <state_dir>/audit.log, metrics on, generous rate limits
    "audit_log": None, "audit_max_bytes": 64 * 1024 * 1024, "audit_backups": 10, "metrics": True,
    "rate_limit": 1000.0, "rate_burst": 5000, "login_failures": 20,
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith(("ISTHMUS_BRIDGE", "ISTHMUS_EDGE__", "ISTHMUS_PLUGINS__")):
            monkeypatch.delenv(name)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# -- the bridge section --------------------------------------------------------------------------

def test_bridge_settings_is_the_typed_bridge_section_with_the_old_fields_and_defaults() -> None:
    from isthmus.bridge.app import BridgeSettings

    assert BridgeSettings is BridgeConfig
    assert BridgeConfig().model_dump() == OLD_BRIDGE_SETTINGS
    assert list(BridgeConfig.model_fields) == list(OLD_BRIDGE_SETTINGS)
    settings = BridgeSettings(tls=True, max_body=5)
    settings.request_timeout = 2  # still assignable, and checked
    assert (settings.tls, settings.max_body, settings.request_timeout) == (True, 5, 2.0)
    with pytest.raises(ValidationError):
        settings.request_timeout = -1
    assert AppConfig().bridge == BridgeConfig() and AppConfig().edge == EdgeConfig()


def test_bridge_section_from_the_file_is_typed(tmp_path: Path) -> None:
    path = write(tmp_path / "isthmus.yaml", {"bridge": {"request_timeout": 120, "max_body": "1024", "tls": True},
                                             "edge": {"watch_config": False}})
    config = load_app_config(path)
    assert config.bridge.request_timeout == 120.0 and config.bridge.max_body == 1024 and config.bridge.tls
    assert config.edge.watch_config is False
    assert config.path == path.resolve()
    path.write_text("bridge:\n#  request_timeout: 5\nedge:\nplugins:\n")
    assert load_app_config(path).bridge == BridgeConfig(), "a section with everything commented out"


@pytest.mark.parametrize(("data", "key", "known"), [
    ({"bridge": {"request_timeout": 5, "foo": 1}}, "bridge.foo", "advertise_url, audit_backups, audit_log"),
    ({"edge": {"watch": True}}, "edge.watch", "watch_config"),
    ({"bridgee": {}}, "bridgee", "bridge, edge, plugins, scheduler, state_dir, tokens_file"),
    ({"path": "/elsewhere"}, "path", "bridge, edge"),
    ({"_cli_parse_args": True}, "_cli_parse_args", "bridge, edge"),
    ({"Scheduler": "pbs"}, "Scheduler", "bridge, edge"),
    ({"bridge": {"Port": 1}}, "bridge.Port", "port"),
])
def test_unknown_keys_name_the_file_and_the_key(tmp_path: Path, data: dict[str, Any], key: str, known: str) -> None:
    path = write(tmp_path / "isthmus.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert info.value.key == key and info.value.file == str(path.resolve())
    assert str(info.value).startswith(f"file {path.resolve()}, key {key}: unknown key (known: ")
    assert known in str(info.value)


def test_wrong_values_name_the_key_and_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path / "isthmus.yaml", {"bridge": {"max_body": "lots", "port": 70000}, "scheduler": "lsf"})
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    message = str(info.value)
    assert info.value.key == "scheduler" and "'slurm'" in message and "'lsf'" in message  # the first, in field order
    assert "key bridge.max_body: " in message and "'lots'" in message and "key bridge.port: " in message


def test_environment_overrides_the_bridge_and_edge_sections(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "isthmus.yaml", {"bridge": {"request_timeout": 120, "max_body": 1000},
                                             "plugins": {"fake": {"size": 1}}})
    monkeypatch.setenv("ISTHMUS_BRIDGE__REQUEST_TIMEOUT", "30")
    monkeypatch.setenv("isthmus_bridge__preauth_per_address", "0")
    monkeypatch.setenv("ISTHMUS_EDGE__WATCH_CONFIG", "false")
    # not config keys of the app: the plugin chain's own variables, the tokens', others
    monkeypatch.setenv("ISTHMUS_PLUGINS__FAKE__SIZE", "7")
    monkeypatch.setenv("ISTHMUS_EDGE_TOKEN", "x")
    monkeypatch.setenv("ISTHMUS_ADMIN_TOKEN_FILE", "/nonexistent")
    monkeypatch.setenv("ISTHMUS_SCHEDULER", "pbs")
    monkeypatch.setenv("ISTHMUS_PATH", "/elsewhere")
    config = load_app_config(path)
    assert config.bridge.request_timeout == 30.0, "env wins over the file"
    assert config.bridge.max_body == 1000, "keys the env does not set stay the file's"
    assert config.bridge.preauth_per_address == 0 and config.edge.watch_config is False
    assert config.plugins == {"fake": {"size": 1}}, "plugin variables stay in the plugin chain"
    assert config.scheduler == "auto" and config.path == path.resolve()
    assert AppConfig().bridge.request_timeout == 30.0, "with no file at all too"


def test_environment_problems_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "isthmus.yaml", {"bridge": {"request_timeout": 120}})
    monkeypatch.setenv("ISTHMUS_BRIDGE__REQUEST_TIMOUT", "30")
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert info.value.key == "bridge.request_timout" and info.value.file is None
    assert "unknown key (known: " in str(info.value) and "ISTHMUS_BRIDGE__REQUEST_TIMOUT" in str(info.value)
    monkeypatch.delenv("ISTHMUS_BRIDGE__REQUEST_TIMOUT")
    monkeypatch.setenv("ISTHMUS_BRIDGE__MAX_BODY", "big")
    with pytest.raises(ConfigError, match=r"key bridge\.max_body: .*'big'.*ISTHMUS_BRIDGE__MAX_BODY"):
        load_app_config(path)


def test_cli_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "isthmus.yaml", {"bridge": {"max_bodyy": 1}})
    with pytest.raises(typer.Exit) as info:
        cli._config(str(path))
    assert info.value.exit_code == 2
    assert f"file {path.resolve()}, key bridge.max_bodyy: unknown key" in capsys.readouterr().err


# -- flags over env over file ---------------------------------------------------------------------

def test_make_bridge_flags_win_over_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "isthmus.yaml", {"bridge": {"request_timeout": 120, "max_body": 1000, "port": 9000,
                                                        "event_ring": 5}})
    monkeypatch.setenv("ISTHMUS_BRIDGE__MAX_BODY", "2000")
    app_config = load_app_config(path)

    def bridge(**flags: Any) -> BridgeConfig:
        made = cli.make_bridge(app_config, admin_token="ist_x", edge_token=None, tokens_file=str(tmp_path / "t"),
                               plugins=None, **{"tls": False, **flags})
        assert isinstance(made.settings, BridgeConfig)
        return made.settings

    settings = bridge()
    assert (settings.request_timeout, settings.max_body, settings.port, settings.event_ring) == (120, 2000, 9000, 5)
    assert not settings.tls
    settings = bridge(request_timeout=3, max_body=10, host="::1", port=9001, tls=True)
    assert (settings.request_timeout, settings.max_body, settings.host, settings.port) == (3, 10, "::1", 9001)
    assert settings.tls and settings.event_ring == 5
    assert app_config.bridge.request_timeout == 120, "flags do not change the loaded config"
    with pytest.raises(ConfigError, match=r"--max-body: .*greater than 0"):
        bridge(max_body=0)
    with pytest.raises(ConfigError, match="--request-timeout"):
        bridge(request_timeout=-1)


def test_tls_in_the_file_is_kept_without_a_certificate(tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy the bridge serves plain HTTP but its cookies must be Secure."""
    app_config = AppConfig(bridge={"tls": True})
    made = cli.make_bridge(app_config, admin_token=None, edge_token=None, tokens_file=str(tmp_path / "t"),
                           plugins=None, tls=False)
    assert made.settings.tls


# -- plugin documents (PUT /_edge/plugins/{id}/config) -------------------------------------------

class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval_seconds: int = 60
    color: str = "red"


class NeedsKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    size: int = 1


def _app(tmp_path: Path, plugins: dict[str, Any] | None = None) -> AppConfig:
    app = AppConfig(plugins=plugins or {})
    app.path = tmp_path / "isthmus.yaml"
    return app


def test_document_invalid_value_is_refused_even_when_env_overrides_it(tmp_path: Path) -> None:
    app = _app(tmp_path)
    environ = {"ISTHMUS_PLUGINS__X__INTERVAL_SECONDS": "45"}
    bad = {"interval_seconds": "not a number"}
    effective, _ = load_plugin_config("x", Doc, app, environ, overlay=bad)
    assert isinstance(effective, Doc) and effective.interval_seconds == 45, "the env masks it in the chain"
    with pytest.raises(ConfigError) as info:
        check_plugin_document("x", Doc, app, bad, environ)
    assert info.value.key == "interval_seconds" and info.value.file == str(app.plugin_file("x"))
    assert "not a number" in str(info.value)
    config, sources = check_plugin_document("x", Doc, app, {"interval_seconds": 5, "color": "blue"}, environ)
    assert isinstance(config, Doc) and (config.interval_seconds, config.color) == (45, "blue")
    assert sources.origin["interval_seconds"] == "env" and sources.origin["color"] == str(app.plugin_file("x"))


def test_document_may_leave_out_what_the_env_provides(tmp_path: Path) -> None:
    app = _app(tmp_path)
    environ = {"ISTHMUS_PLUGINS__X__KEY": "from-env"}
    config, _ = check_plugin_document("x", NeedsKey, app, {"size": 2}, environ)
    assert isinstance(config, NeedsKey) and (config.key, config.size) == ("from-env", 2)
    with pytest.raises(ConfigError) as info:
        check_plugin_document("x", NeedsKey, app, {"size": 2}, {})
    assert info.value.key == "key"
    with pytest.raises(ConfigError) as info:
        check_plugin_document("x", NeedsKey, app, {"key": 3, "size": 2}, environ)
    assert info.value.key == "key", "a wrong value is wrong even where the env provides one"


def test_document_is_merged_with_isthmus_yaml_and_host_defaults(tmp_path: Path) -> None:
    app = _app(tmp_path, {"x": {"enabled": True, "key": "from-yaml"}})
    config, _ = check_plugin_document("x", NeedsKey, app, {"size": 3}, {})
    assert isinstance(config, NeedsKey) and config.key == "from-yaml"
    config, sources = check_plugin_document("y", NeedsKey, _app(tmp_path), {}, {}, defaults={"key": "host"})
    assert isinstance(config, NeedsKey) and config.key == "host" and sources.origin["key"] == "default"
    with pytest.raises(ConfigError, match="colour"):
        check_plugin_document("x", NeedsKey, app, {"colour": "x"}, {})


def test_plugin_env_problems_name_the_variable(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_plugin_config("my-x", Doc, app, {"ISTHMUS_PLUGINS__MY_X__COLOUR": "blue"})
    assert info.value.key == "colour" and info.value.file is None
    assert "ISTHMUS_PLUGINS__MY_X__COLOUR" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_plugin_config("x", Doc, app, {"ISTHMUS_PLUGINS__X__INTERVAL_SECONDS": "soon"})
    assert info.value.key == "interval_seconds" and "ISTHMUS_PLUGINS__X__INTERVAL_SECONDS" in str(info.value)
