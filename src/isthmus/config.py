"""Configuration: ``isthmus.yaml`` and the per-plugin config chain.

Plugin values come from, highest first:

1. environment ``ISTHMUS_PLUGINS__<ID>__<FIELD>`` (values parsed as YAML scalars),
2. the dedicated file ``<config_dir>/plugins/<id>/plugin.yaml``,
3. ``plugins.<id>`` in ``isthmus.yaml``,
4. the plugin's ``config_model`` defaults.

A bad value is a ConfigError naming the file, the key and what was expected; nothing is
half-applied: callers get a whole validated model or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

CONFIG_NAME = "isthmus.yaml"
ENV_PREFIX = "ISTHMUS_PLUGINS__"
ENABLED_KEY = "enabled"


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "isthmus"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "isthmus"


class AppConfig(BaseModel):
    """The whole ``isthmus.yaml``. Unknown top-level keys are errors."""

    model_config = ConfigDict(extra="forbid")

    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scheduler: str = "auto"  # auto | slurm | pbs | none | simulated
    state_dir: Path | None = None
    tokens_file: Path | None = None
    bridge: dict[str, Any] = Field(default_factory=dict)
    edge: dict[str, Any] = Field(default_factory=dict)

    # Not in the file: where it was read from.
    path: Path | None = Field(default=None, exclude=True)

    @property
    def config_dir(self) -> Path:
        return self.path.parent if self.path else user_config_dir()

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()

    def plugin_section(self, plugin_id: str) -> dict[str, Any]:
        return dict(self.plugins.get(plugin_id) or {})

    def plugin_file(self, plugin_id: str) -> Path:
        return self.config_dir / "plugins" / plugin_id / "plugin.yaml"


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top, found {type(data).__name__}", file=str(path))
    return data


def find_config(explicit: str | Path | None) -> Path | None:
    """``--config`` if given (must exist), else ./isthmus.yaml, else ~/.config/isthmus/isthmus.yaml."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError("config file does not exist", file=str(path))
        return path.resolve()
    for candidate in (Path.cwd() / CONFIG_NAME, user_config_dir() / CONFIG_NAME):
        if candidate.is_file():
            check_trusted(candidate)
            return candidate.resolve()
    return None


def check_trusted(path: Path) -> None:
    """Refuse a config file found by looking (not named with --config) that someone else
    could have planted or edited: it can name the token file and plugins to load."""
    st = path.stat()
    uid = os.getuid()
    if st.st_uid != uid or st.st_mode & 0o022:
        why = "is owned by another user" if st.st_uid != uid else "is writable by group or others"
        raise ConfigError(f"found {path} but it {why}, so it is not trusted; fix its owner/mode "
                          f"(chmod go-w) or name the file you mean with --config", file=str(path))


def load_app_config(explicit: str | Path | None = None) -> AppConfig:
    path = find_config(explicit)
    if path is None:
        return AppConfig()
    data = read_yaml(path)
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), file=str(path)) from exc
    config.path = path
    return config


def _describe(exc: ValidationError, sources: Mapping[str, str] | None = None) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top)"
        top = str(err["loc"][0]) if err["loc"] else ""
        where = f" (from {sources[top]})" if sources and top in sources else ""
        if err["type"] == "extra_forbidden":
            parts.append(f"{key}{where}: unknown key")
        else:
            parts.append(f"{key}{where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


@dataclass
class ConfigSources:
    """The effective plugin values and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # key -> env | <file> | isthmus.yaml | default


def env_overrides(plugin_id: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``ISTHMUS_PLUGINS__<ID>__<FIELD>[__<SUB>]`` as a nested dict (keys lower-cased)."""
    environ = os.environ if environ is None else environ
    prefix = ENV_PREFIX + plugin_id.upper().replace("-", "_") + "__"
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix):
            continue
        path = [p.lower() for p in name[len(prefix):].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def plugin_enabled(app: AppConfig, plugin_id: str, default: bool,
                   environ: Mapping[str, str] | None = None) -> bool:
    env = env_overrides(plugin_id, environ)
    if ENABLED_KEY in env:
        return bool(env[ENABLED_KEY])
    section = app.plugin_section(plugin_id)
    if ENABLED_KEY in section:
        return bool(section[ENABLED_KEY])
    return default


def load_plugin_config(plugin_id: str, model: type[BaseModel] | None, app: AppConfig,
                       environ: Mapping[str, str] | None = None,
                       overlay: Mapping[str, Any] | None = None) -> tuple[BaseModel | None, ConfigSources]:
    """Build the plugin's config from the chain; raise ConfigError naming file and key.

    ``overlay`` replaces the dedicated file's content (used to validate a PUT before
    anything is written).
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    section = app.plugin_section(plugin_id)
    yaml_name = str(app.path) if app.path else CONFIG_NAME
    layers.append((yaml_name, section))
    dedicated = app.plugin_file(plugin_id)
    if overlay is not None:
        layers.append((str(dedicated), dict(overlay)))
    elif dedicated.is_file():
        layers.append((str(dedicated), read_yaml(dedicated)))
    layers.append(("env", env_overrides(plugin_id, environ)))

    sources = ConfigSources()
    merged: dict[str, Any] = {}
    for origin, values in layers:
        for key, value in values.items():
            if key == ENABLED_KEY:
                continue
            merged[key] = value
            sources.origin[key] = origin
    if model is None:
        if merged:
            key = next(iter(merged))
            raise ConfigError(f"plugin {plugin_id} takes no configuration", file=sources.origin[key], key=key)
        return None, sources
    unknown = [k for k in merged if k not in model.model_fields]
    if unknown:
        key = unknown[0]
        expected = ", ".join(sorted(model.model_fields)) or "no keys"
        raise ConfigError(f"unknown key {key!r} for plugin {plugin_id}; expected one of: {expected}",
                          file=sources.origin[key], key=key)
    try:
        instance = model.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]["loc"]
        key = str(first[0]) if first else None
        raise ConfigError(_describe(exc, sources.origin), file=sources.origin.get(key or "", None),
                          key=key) from exc
    dumped = instance.model_dump(mode="json")
    sources.values = dumped
    for key in dumped:
        sources.origin.setdefault(key, "default")
    return instance, sources


def write_plugin_file(app: AppConfig, plugin_id: str, values: Mapping[str, Any]) -> Path:
    """Atomically replace the plugin's dedicated config file."""
    path = app.plugin_file(plugin_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(dict(values), sort_keys=True))
    os.replace(tmp, path)
    return path
