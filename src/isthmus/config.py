"""Configuration: ``isthmus.yaml`` as one typed model, and the per-plugin config chain.

``isthmus.yaml`` is an :class:`AppConfig` (pydantic-settings): typed ``bridge:`` and ``edge:``
sections (:class:`BridgeConfig`, :class:`EdgeConfig`), the scheduler, paths, and one free-form
section per plugin. Values of the ``bridge:`` and ``edge:`` sections come from, highest first:

1. command-line flags (``--request-timeout``, ``--max-body``, ``--host``, ``--port``),
2. environment ``ISTHMUS_BRIDGE__<FIELD>`` / ``ISTHMUS_EDGE__<FIELD>``,
3. ``isthmus.yaml``,
4. the models' defaults.

Plugin values come from, highest first:

1. environment ``ISTHMUS_PLUGINS__<ID>__<FIELD>`` (values parsed as YAML scalars),
2. the dedicated file ``<config_dir>/plugins/<id>/plugin.yaml``,
3. ``plugins.<id>`` in ``isthmus.yaml``,
4. the plugin's ``config_model`` defaults.

Unknown keys are errors everywhere. A bad value is a ConfigError naming the file (or the
environment variable), the key and what was expected; nothing is half-applied: callers get a
whole validated model or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .errors import ConfigError

CONFIG_NAME = "isthmus.yaml"
ENV_PREFIX = "ISTHMUS_PLUGINS__"
ENABLED_KEY = "enabled"
APP_ENV_PREFIX = "ISTHMUS_"
ENV_DELIMITER = "__"
ENV_SECTIONS = ("bridge", "edge", "auth")  # the isthmus.yaml sections the environment may override
INTERNAL_FIELDS = frozenset({"path"})  # AppConfig fields that are not keys of the file
SECTIONS = frozenset({"bridge", "edge", "auth", "plugins"})  # the mappings of isthmus.yaml
ENV_ORIGIN = "env"  # the origin of plugin values set by ISTHMUS_PLUGINS__<ID>__<FIELD>
DEFAULT_ORIGIN = "default"


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "isthmus"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "isthmus"


class BridgeConfig(BaseModel):
    """The ``bridge:`` section: where the bridge listens and its limits (operations.md, "Limits
    and sizes"). ``isthmus.bridge.app.BridgeSettings`` is this model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"  # --host wins
    port: int = Field(default=8000, ge=0, le=65535)  # --port wins
    request_timeout: float = Field(default=60.0, gt=0)  # --request-timeout wins
    max_body: int = Field(default=64 * 1024**3, gt=0)  # --max-body wins
    tls: bool = False  # clients reach the bridge over TLS (set by --tls-cert; true behind a TLS proxy)
    event_ring: int = Field(default=10_000, ge=0)
    event_ring_bytes: int = Field(default=32 * 1024 * 1024, ge=0)  # the replay ring's budget, whatever the count
    max_event: int = Field(default=1024 * 1024, gt=0)  # the largest notification an edge may publish
    event_queue: int = Field(default=8 * 1024 * 1024, gt=0)  # bytes per event-stream client
    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    idle_timeout: int = Field(default=30, gt=0)
    preauth_per_address: int = Field(default=256, ge=0)  # 0: no cap
    # Several bridges: share edges, tokens and events through Redis (--redis wins); None: alone.
    redis: str | None = Field(default=None, pattern=r"^rediss?://")
    # How the other bridges reach this one (relayed requests); default http(s)://host:port.
    advertise_url: str | None = Field(default=None, pattern=r"^https?://")
    bridge_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # default: host:port:random
    # Accountability (operations.md, "Audit, metrics, rate limits").
    audit_log: Path | None = None  # default <state_dir>/audit.log; "-" turns auditing off
    audit_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)  # rotate past this size
    audit_backups: int = Field(default=10, ge=0)  # rotated files kept (audit.log.1 ... .N)
    metrics: bool = True  # /metrics (role viewer or metrics)
    rate_limit: float = Field(default=1000.0, ge=0)  # requests per second per principal; 0: no limit
    rate_burst: int = Field(default=5000, ge=1)  # requests a principal may send at once
    login_failures: int = Field(default=20, ge=0)  # bad credentials per address per minute, then 429; 0: no limit


class OidcConfig(BaseModel):
    """``auth.oidc``: accept access tokens (JWT) from one OpenID Connect issuer (operations.md, "OIDC")."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    issuer: str = Field(pattern=r"^https?://")  # discovery at <issuer>/.well-known/openid-configuration
    client_id: str = Field(min_length=1)  # the Explorer's client (authorization code + PKCE)
    client_secret_file: Path | None = None  # a confidential client's secret (mode 600); none: public client
    audience: str = Field(min_length=1)  # the `aud` access tokens must carry (also sent as `resource`)
    roles_claim: str = "groups"  # a claim holding a string or a list of strings
    role_map: dict[str, Literal["viewer", "user", "admin", "metrics"]] = Field(default_factory=dict)
    default_role: Literal["viewer", "user", "admin", "metrics"] | None = None  # none: no mapped role → 403
    name_claim: str = "preferred_username"
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "offline_access"])
    redirect_url: str | None = Field(default=None, pattern=r"^https?://")  # default: <bridge>/auth/oidc/callback
    leeway: float = Field(default=30.0, ge=0, le=300)  # clock skew allowed on exp/nbf/iat, seconds
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    label: str | None = Field(default=None, max_length=64)  # the Explorer's "Log in with <label>"; default: host


class AuthConfig(BaseModel):
    """The ``auth:`` section: identity beside the API tokens."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    oidc: OidcConfig | None = None


class EdgeConfig(BaseModel):
    """The ``edge:`` section: settings of an edge process itself (its plugins have their own)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    watch_config: bool = True  # reload plugin configs when isthmus.yaml or a plugin.yaml changes


class _SectionEnv(EnvSettingsSource):
    """``ISTHMUS_BRIDGE__<FIELD>`` and ``ISTHMUS_EDGE__<FIELD>`` only.

    Plugin variables (``ISTHMUS_PLUGINS__...``) belong to the plugin chain, which keeps their
    origin; the tokens' variables and everything else under ``ISTHMUS_`` are not config keys.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        prefixes = _section_env_prefixes()
        self.env_vars = {k: v for k, v in self.env_vars.items() if k.lower().startswith(prefixes)}

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__call__().items() if k in ENV_SECTIONS}


def _section_env_prefixes() -> tuple[str, ...]:
    return tuple(f"{APP_ENV_PREFIX}{section}{ENV_DELIMITER}".lower() for section in ENV_SECTIONS)


class AppConfig(BaseSettings):
    """The whole ``isthmus.yaml``; the environment overrides the ``bridge:`` and ``edge:`` sections.

    Unknown keys are errors, at the top and in the typed sections. Build it from a file with
    :func:`load_app_config`; ``AppConfig(**data)`` takes the file's content as keywords.
    """

    model_config = SettingsConfigDict(extra="forbid", env_prefix=APP_ENV_PREFIX,
                                      env_nested_delimiter=ENV_DELIMITER, case_sensitive=False)

    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scheduler: Literal["auto", "slurm", "pbs", "none", "simulated"] = "auto"
    state_dir: Path | None = None
    tokens_file: Path | None = None
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    # Not in the file: where it was read from.
    path: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: the environment over the keywords (the file's content); no .env, no secrets dir.
        return (_SectionEnv(settings_cls), init_settings)

    def bridge_settings(self, **flags: Any) -> BridgeConfig:
        """The ``bridge:`` section with command-line values on top (``None`` = flag not given).

        Raises ConfigError naming the flag when a value does not fit the model.
        """
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            return BridgeConfig.model_validate({**self.bridge.model_dump(), **given})
        except ValidationError as exc:
            err = exc.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else "?"
            if name not in BridgeConfig.model_fields:
                raise ConfigError(f"unknown bridge setting {name!r}") from exc
            raise ConfigError(f"--{name.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from exc

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
    """Find and read ``isthmus.yaml`` (see :func:`find_config`) under the environment's overrides."""
    path = find_config(explicit)
    return build_app_config(read_yaml(path) if path is not None else {}, path)


def build_app_config(data: Mapping[Any, Any], path: Path | None = None) -> AppConfig:
    """``data`` (the content of ``path``) as an AppConfig, with ``ISTHMUS_BRIDGE__*`` and
    ``ISTHMUS_EDGE__*`` on top; a ConfigError names the file or variable and the key."""
    # A section whose keys are all commented out reads as None: it means "all defaults".
    values = {str(k): v for k, v in data.items() if not (v is None and k in SECTIONS)}
    # Checked here, exactly: BaseSettings would match keywords case-insensitively and take
    # those beginning with "_" as its own options (_cli_parse_args, _secrets_dir, ...).
    known = _known_keys(())
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(f"unknown key (known: {', '.join(known)})", file=str(path) if path else None,
                          key=unknown[0])
    try:
        config = AppConfig(**values)
    except ValidationError as exc:
        raise _app_config_error(exc, path) from exc
    except SettingsError as exc:  # a variable pydantic-settings could not even parse
        raise ConfigError(f"environment: {exc}") from exc
    config.path = path
    return config


def _known_keys(parent: tuple[str, ...]) -> list[str]:
    """The keys a typed part of isthmus.yaml accepts at ``parent`` (``()`` is the top)."""
    model: type[BaseModel] = AppConfig
    for part in parent:
        info = model.model_fields.get(part)
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(k for k in model.model_fields if k not in INTERNAL_FIELDS)


def _section_env_names() -> dict[str, str]:
    """Lower-cased name -> name of the environment variables that override sections."""
    prefixes = _section_env_prefixes()
    return {name.lower(): name for name in os.environ if name.lower().startswith(prefixes)}


def _app_config_error(exc: ValidationError, path: Path | None) -> ConfigError:
    """One ConfigError for all problems; its file and key are the first problem's."""
    env_names = _section_env_names()
    problems: list[tuple[str | None, str, str]] = []  # (file, key, reason)
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top)"
        if err["type"] == "extra_forbidden":
            reason = f"unknown key (known: {', '.join(_known_keys(loc[:-1])) or 'none'})"
        else:
            reason = f"{err['msg']} (got {err.get('input')!r})"
        base = (APP_ENV_PREFIX + ENV_DELIMITER.join(loc)).lower()
        variable = next((name for lower, name in sorted(env_names.items())
                         if lower == base or lower.startswith(base + ENV_DELIMITER)), None)
        if variable is not None:
            problems.append((None, key, f"{reason}; set by the environment variable {variable}"))
        else:
            problems.append((str(path) if path else None, key, reason))
    file, key, reason = problems[0]
    more = "".join(f"; also {f'file {f}, ' if f and f != file else ''}key {k}: {r}" for f, k, r in problems[1:])
    return ConfigError(reason + more, file=file, key=key)


def _describe(errors: list[Any], sources: Mapping[str, str] | None = None) -> str:
    """Pydantic errors as "key (from origin): what was wrong (got value)"."""
    parts = []
    for err in errors:
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
                       overlay: Mapping[str, Any] | None = None, *,
                       defaults: Mapping[str, Any] | None = None) -> tuple[BaseModel | None, ConfigSources]:
    """Build the plugin's config from the chain; raise ConfigError naming file and key.

    ``overlay`` replaces the dedicated file's content; ``defaults`` (a host's own, like the
    demo's) sit just above the model's defaults.
    """
    env = env_overrides(plugin_id, environ)
    return _build_plugin_config(plugin_id, model, _plugin_layers(plugin_id, app, overlay, defaults, env))


def check_plugin_document(plugin_id: str, model: type[BaseModel] | None, app: AppConfig,
                          document: Mapping[str, Any], environ: Mapping[str, str] | None = None, *,
                          defaults: Mapping[str, Any] | None = None) -> tuple[BaseModel | None, ConfigSources]:
    """Validate ``document``, meant to become the plugin's dedicated file, before it is written.

    The document must hold on its own, merged with ``isthmus.yaml`` and the defaults: an
    environment override of a key does not excuse an invalid value of that key in the
    document (the file outlives the environment, and would break the next start). Only a
    key that the document leaves out and the environment provides may be missing. Then the
    effective config (environment included) is built and returned.
    """
    env = env_overrides(plugin_id, environ)
    _build_plugin_config(plugin_id, model, _plugin_layers(plugin_id, app, document, defaults, {}), provided=env)
    return _build_plugin_config(plugin_id, model, _plugin_layers(plugin_id, app, document, defaults, env))


_Layers: TypeAlias = list[tuple[str, Mapping[str, Any]]]


def _plugin_layers(plugin_id: str, app: AppConfig, overlay: Mapping[str, Any] | None,
                   defaults: Mapping[str, Any] | None, env: Mapping[str, Any]) -> _Layers:
    """(origin, values), lowest first."""
    layers: _Layers = []
    if defaults:
        layers.append((DEFAULT_ORIGIN, defaults))
    layers.append((str(app.path) if app.path else CONFIG_NAME, app.plugin_section(plugin_id)))
    dedicated = app.plugin_file(plugin_id)
    if overlay is not None:
        layers.append((str(dedicated), overlay))
    elif dedicated.is_file():
        layers.append((str(dedicated), read_yaml(dedicated)))
    layers.append((ENV_ORIGIN, env))
    return layers


def _origin_error(plugin_id: str, message: str, origin: str | None, key: str | None) -> ConfigError:
    """A ConfigError naming the file a key came from, or its environment variable."""
    if origin == ENV_ORIGIN and key is not None:
        variable = f"{ENV_PREFIX}{plugin_id.upper().replace('-', '_')}{ENV_DELIMITER}{key.upper()}"
        return ConfigError(f"{message}; set by the environment variable {variable}", key=key)
    return ConfigError(message, file=origin, key=key)


def _has_path(tree: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in loc:
        if not isinstance(node, Mapping) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def _build_plugin_config(plugin_id: str, model: type[BaseModel] | None, layers: _Layers,
                         provided: Mapping[str, Any] | None = None) -> tuple[BaseModel | None, ConfigSources]:
    """Merge ``layers`` key by key (higher replaces lower) and validate.

    With ``provided``, "missing" errors at keys it holds are not errors, and a result that
    only lacks those keys is (None, sources).
    """
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
            raise _origin_error(plugin_id, f"plugin {plugin_id} takes no configuration", sources.origin[key], key)
        return None, sources
    unknown = [k for k in merged if k not in model.model_fields]
    if unknown:
        key = unknown[0]
        expected = ", ".join(sorted(model.model_fields)) or "no keys"
        raise _origin_error(plugin_id, f"unknown key {key!r} for plugin {plugin_id}; expected one of: {expected}",
                            sources.origin[key], key)
    try:
        instance = model.model_validate(merged)
    except ValidationError as exc:
        errors = [err for err in exc.errors()
                  if not (provided and err["type"] == "missing" and _has_path(provided, err["loc"]))]
        if not errors:
            return None, sources
        first = errors[0]["loc"]
        bad_key = str(first[0]) if first else None
        raise _origin_error(plugin_id, _describe(errors, sources.origin), sources.origin.get(bad_key or ""),
                            bad_key) from exc
    dumped = instance.model_dump(mode="json")
    sources.values = dumped
    for key in dumped:
        sources.origin.setdefault(key, DEFAULT_ORIGIN)
    return instance, sources


def write_plugin_file(app: AppConfig, plugin_id: str, values: Mapping[str, Any]) -> Path:
    """Atomically replace the plugin's dedicated config file."""
    path = app.plugin_file(plugin_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(dict(values), sort_keys=True))
    os.replace(tmp, path)
    return path
