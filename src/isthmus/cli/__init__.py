"""``isthmus`` — run a bridge, an edge, the demo; manage tokens and plugins."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from ..bridge.audit import record_cli
from ..config import AppConfig
from ..errors import ConfigError
from ..logs import LogFormat, setup_logging
from .audit import audit_cmd
from .common import ConfigOpt, config_or_exit, is_loopback, take_secret

if TYPE_CHECKING:
    import uvicorn

    from ..bridge.app import Bridge
    from ..edge.service import EdgeService
    from ..runtime.host import PluginHost

app = typer.Typer(help="Isthmus: reach HPC clusters from anywhere.", no_args_is_help=True,
                  add_completion=True, pretty_exceptions_enable=False)
token_app = typer.Typer(help="Create, list and revoke API and enrolment tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.command("audit")(audit_cmd)

log = logging.getLogger("isthmus")

HostOpt = Annotated[str | None, typer.Option(help="Address to listen on (default: bridge.host in "
                                                "isthmus.yaml or $ISTHMUS_BRIDGE__HOST, else 127.0.0.1).")]
PortOpt = Annotated[int | None, typer.Option(help="Port to listen on (default: bridge.port, else 8000).")]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
LogFormatOpt = Annotated[LogFormat, typer.Option("--log-format", help="text, or json: one JSON object per line "
                                                 "(time, level, logger, message, request_id).")]


def _setup_logging(level: str, fmt: LogFormat = "text") -> None:
    setup_logging(level, fmt)


_config = config_or_exit


def protect_process() -> None:
    """Make this process non-dumpable (Linux), so that the jobs it starts under the same
    account cannot read its memory or ``/proc/<pid>/environ`` (where secrets were)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        pr_set_dumpable = 4
        ctypes.CDLL(name, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_DUMPABLE) is not available")


def _plugins(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


# -- bridge -----------------------------------------------------------------------------------

def _uvicorn_config(bridge: Any, host: str, port: int, tls_cert: str | None, tls_key: str | None,
                    level: str, loop: str) -> Any:
    import uvicorn

    from ..bridge import server
    from ..wire.protocol import MAX_MESSAGE

    settings = bridge.settings
    server.LIMITS.max_header_bytes = settings.max_header_bytes
    server.LIMITS.header_timeout = settings.header_timeout
    server.LIMITS.body_timeout = settings.body_timeout
    server.LIMITS.preauth_per_address = settings.preauth_per_address
    server.tune_malloc()
    return uvicorn.Config(bridge, host=host, port=port, lifespan="on", loop=loop, http=server.GuardedHttp,
                          ws=server.GuardedWebSocket, ws_max_size=MAX_MESSAGE,
                          ws_ping_interval=None,  # the edge link has its own heartbeat (wire.peer)
                          ws_ping_timeout=None, log_level=level.lower(), access_log=False,
                          log_config=None,  # uvicorn's lines go through our handler (text or JSON)
                          ssl_certfile=tls_cert, ssl_keyfile=tls_key, timeout_keep_alive=settings.idle_timeout,
                          proxy_headers=False, server_header=False,
                          backlog=4096)  # a fleet reconnecting at once: queue its SYNs (capped by somaxconn)


def make_bridge(app_config: AppConfig, *, admin_token: str | None, edge_token: str | None,
                tokens_file: str | None, plugins: list[str] | None, tls: bool,
                request_timeout: float | None = None, max_body: int | None = None,
                host: str | None = None, port: int | None = None, redis: str | None = None,
                advertise_url: str | None = None) -> Bridge:
    """The bridge of ``app_config``: its ``bridge:`` section (the environment's overrides
    included) with the flags that were given (not None) on top; ``tls`` only ever turns TLS on.

    Raises ConfigError naming the flag whose value does not fit.
    """
    from ..bridge.app import Bridge, tokens_path
    from ..bridge.redis_tokens import open_token_store

    settings = app_config.bridge_settings(host=host, port=port, tls=True if tls else None,
                                          request_timeout=request_timeout, max_body=max_body, redis=redis,
                                          advertise_url=advertise_url)
    tokens = open_token_store(tokens_path(app_config, tokens_file), admin_token=admin_token, edge_token=edge_token,
                              redis_url=settings.redis)
    return Bridge(settings, tokens, app_config, plugins)


def _make_bridge_or_exit(app_config: AppConfig, **kwargs: Any) -> Bridge:
    try:
        return make_bridge(app_config, **kwargs)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


_background: set[asyncio.Task[None]] = set()


def _reload_on_sighup(*hosts: PluginHost | None) -> None:
    """On SIGHUP, re-read the plugin configs of ``hosts`` (a bad new config leaves the old one).

    Installed with loop.add_signal_handler, which leaves uvicorn's own SIGINT/SIGTERM
    handling alone; without hosts, SIGHUP is only logged (it no longer ends the process).
    """
    loop = asyncio.get_running_loop()
    live = [h for h in hosts if h is not None]

    def on_sighup() -> None:
        if not live:
            log.info("SIGHUP: no plugins in this process, nothing to reload")
        for host in live:
            task = loop.create_task(_reload_plugins(host), name=f"reload-{host.name}")
            _background.add(task)
            task.add_done_callback(_background.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)


async def _reload_plugins(host: PluginHost) -> None:
    try:
        results = await host.reload()
    except Exception:
        log.exception("SIGHUP: reloading the plugins of %s failed", host.name)
        return
    log.info("SIGHUP: plugins of %s: %s", host.name, results)


def _check_transport(host: str, tls_cert: str | None, tls_key: str | None, allow_insecure_http: bool) -> None:
    if bool(tls_cert) != bool(tls_key):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    if not tls_cert and not is_loopback(host) and not allow_insecure_http:
        typer.echo(f"error: refusing plain HTTP on {host}: tokens would cross the network in clear. "
                   "Give --tls-cert/--tls-key, listen on 127.0.0.1 behind a TLS proxy, or pass "
                   "--allow-insecure-http if you really mean it.", err=True)
        raise typer.Exit(2)


@app.command()
def bridge(
    host: HostOpt = None,
    port: PortOpt = None,
    config: ConfigOpt = None,
    plugins: Annotated[str | None, typer.Option(help="Plugins to host in the bridge itself "
                                                 "(names or pkg.module:Class), comma-separated.")] = None,
    tokens_file: Annotated[str | None, typer.Option(help="Token file (default <config_dir>/tokens.json).")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[str | None, typer.Option(help="TLS private key (PEM).")] = None,
    allow_insecure_http: Annotated[bool, typer.Option(help="Allow plain HTTP on a non-loopback address.")] = False,
    request_timeout: Annotated[float | None, typer.Option(help="Seconds an edge has to answer (default 60).")] = None,
    max_body: Annotated[int | None, typer.Option(help="Largest request body in bytes.")] = None,
    redis: Annotated[str | None, typer.Option(metavar="redis://HOST:PORT/DB", envvar="ISTHMUS_REDIS",
                                              help="Share edges, tokens and events with other bridges "
                                                   "through this Redis (default: this bridge alone).")] = None,
    advertise_url: Annotated[str | None, typer.Option(help="How the other bridges reach this one "
                                                      "(with --redis; default http(s)://HOST:PORT).")] = None,
    log_level: LogOpt = "info",
    log_format: LogFormatOpt = "text",
) -> None:
    """Run the bridge: the public REST API, event stream and Explorer that edges dial into.

    Environment: ISTHMUS_ADMIN_TOKEN (an admin client token), ISTHMUS_EDGE_TOKEN (an edge
    enrolment token); each may instead name a mode-600 file in ISTHMUS_ADMIN_TOKEN_FILE /
    ISTHMUS_EDGE_TOKEN_FILE. Both are removed from the environment once read.
    """
    _setup_logging(log_level, log_format)
    app_config = _config(config)
    host = host if host is not None else app_config.bridge.host
    _check_transport(host, tls_cert, tls_key, allow_insecure_http)
    protect_process()
    the_bridge = _make_bridge_or_exit(app_config, admin_token=take_secret("ISTHMUS_ADMIN_TOKEN"),
                                      edge_token=take_secret("ISTHMUS_EDGE_TOKEN"), tokens_file=tokens_file,
                                      plugins=_plugins(plugins), tls=bool(tls_cert),
                                      request_timeout=request_timeout, max_body=max_body, host=host, port=port,
                                      redis=redis, advertise_url=advertise_url)
    if the_bridge.settings.redis:
        pass  # the shared tokens are read from Redis once it starts
    elif not the_bridge.tokens.has_client_tokens:
        log.warning("no client tokens: set ISTHMUS_ADMIN_TOKEN or run 'isthmus token create --role admin'")
    if not the_bridge.settings.redis and not the_bridge.tokens.has_edge_tokens:
        log.warning("no edge enrolment tokens: set ISTHMUS_EDGE_TOKEN or run "
                    "'isthmus token create --role edge --edge NAME'")
    import uvicorn

    settings = the_bridge.settings
    server = uvicorn.Server(_uvicorn_config(the_bridge, settings.host, settings.port, tls_cert, tls_key,
                                            log_level, "uvloop"))
    the_bridge.on_exit(lambda: setattr(server, "should_exit", True))
    _run_fast(_serve_bridge(server, the_bridge))


async def _serve_bridge(server: uvicorn.Server, the_bridge: Bridge) -> None:
    """uvicorn's serve(), with SIGHUP reloading the bridge-hosted plugins (``--plugins``)."""
    _reload_on_sighup(the_bridge.local)
    await server.serve()


# -- edge -------------------------------------------------------------------------------------

def _ws_url(url: str, allow_insecure_http: bool) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        typer.echo(f"error: --bridge must be ws://, wss://, http:// or https://, not {url!r}", err=True)
        raise typer.Exit(2)
    if scheme == "ws" and not is_loopback(parts.hostname or "") and not allow_insecure_http:
        typer.echo("error: refusing ws:// to a non-loopback bridge; use wss:// or --allow-insecure-http",
                   err=True)
        raise typer.Exit(2)
    return parts._replace(scheme=scheme).geturl()


def build_edge(app_config: AppConfig, name: str, bridge_url: str | list[str], token: str | None,
               plugins: list[str] | None, *, ca_file: str | None = None,
               overrides: dict[str, dict[str, Any]] | None = None) -> tuple[Any, Any]:
    from .. import schedulers
    from ..edge.service import EdgeService
    from ..runtime.host import PluginHost

    schedulers.force(app_config.scheduler)
    host = PluginHost(app_config, plugins, name=name, overrides=overrides)
    host.load()
    service = EdgeService(host, bridge_url, name, token, ca_file=ca_file)
    return host, service


async def _edge_main(host: PluginHost, service: EdgeService, watch: list[Path]) -> None:
    from ..edge.service import run_edge

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    _reload_on_sighup(host)
    if not host.app_config.edge.watch_config:
        watch = []
    watcher = asyncio.create_task(_watch_config(host, watch)) if watch else None
    try:
        await run_edge(host, service)
    finally:
        if watcher is not None:
            watcher.cancel()


async def _watch_config(host: Any, paths: list[Path]) -> None:
    """Reload plugin configs when isthmus.yaml or a plugin.yaml changes on disk."""
    try:
        from watchfiles import awatch
    except ImportError:
        return
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return
    async for _changes in awatch(*existing, debounce=300, recursive=True):
        results = await host.reload()
        log.info("config changed on disk; reload: %s", results)


@app.command()
def edge(
    bridge: Annotated[list[str], typer.Option("--bridge", metavar="URL", help="Bridge URL, e.g. ws://127.0.0.1:8000 or "
                                              "wss://bridge:443. Several bridges (sharing edges through "
                                              "Redis): repeat the flag or separate with commas; the edge "
                                              "moves to the next when one is gone.")],
    name: Annotated[str, typer.Option(help="This edge's name (letters, digits, . _ -).")],
    plugins: Annotated[str | None, typer.Option(help="Plugins to load, by name or pkg.module:Class, "
                                                 "comma-separated (default: enabled installed ones).")] = None,
    config: ConfigOpt = None,
    ca_file: Annotated[str | None, typer.Option(help="CA bundle to verify a wss:// bridge.")] = None,
    allow_insecure_http: Annotated[bool, typer.Option(help="Allow ws:// to a non-loopback bridge.")] = False,
    token_file: Annotated[str | None, typer.Option(help="File (mode 600) holding the enrolment token "
                                                   "(default $ISTHMUS_EDGE_TOKEN_FILE, else "
                                                   "$ISTHMUS_EDGE_TOKEN).")] = None,
    log_level: LogOpt = "info",
    log_format: LogFormatOpt = "text",
) -> None:
    """Run an edge: dial out to the bridge and host plugins.

    Environment: ISTHMUS_EDGE_TOKEN (the enrolment token the bridge accepts) or
    ISTHMUS_EDGE_TOKEN_FILE (a mode-600 file holding it). The edge removes both from its
    environment once read, so jobs and tasks never inherit them.
    """
    _setup_logging(log_level, log_format)
    urls = [_ws_url(u.strip(), allow_insecure_http) for value in bridge for u in value.split(",") if u.strip()]
    if not urls:
        typer.echo("error: --bridge needs a URL", err=True)
        raise typer.Exit(2)
    app_config = _config(config)
    token = take_secret("ISTHMUS_EDGE_TOKEN", token_file)
    protect_process()
    if not token:
        log.warning("no enrolment token (--token-file, ISTHMUS_EDGE_TOKEN_FILE or ISTHMUS_EDGE_TOKEN); "
                    "the bridge will refuse this edge")
    host, service = build_edge(app_config, name, urls, token, _plugins(plugins), ca_file=ca_file)
    watch = [app_config.path, app_config.config_dir / "plugins"] if app_config.path else []
    _run_fast(_edge_main(host, service, [p for p in watch if p]))


def _run_fast(coro: Any) -> None:
    """Run on uvloop when installed: the edge's frame path is ~30 % faster there.

    Processes are not spawned from this loop (uvloop spawns 5x slower): the task plugin
    spawns from worker processes, PSI/J from its own threads.
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


# -- demo -------------------------------------------------------------------------------------

DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    # The demo runs jobs and tasks anywhere on this laptop: no allow-list (documented in operations.md).
    "psij": {"allow_any_executable": True},
    "tasks": {"allow_any_executable": True},
}


@app.command()
def demo(
    host: HostOpt = None,
    port: PortOpt = None,
    token_file: Annotated[str | None, typer.Option(help="Write the admin token to this file.")] = None,
    config: ConfigOpt = None,
    log_level: LogOpt = "warning",
    log_format: LogFormatOpt = "text",
) -> None:
    """Run a bridge and one edge named 'demo' on a simulated cluster, in one process.

    SIGHUP reloads the edge's plugin configuration; the bridge: section of the config sets the
    bridge's limits (and --host/--port when not given).
    """
    _setup_logging(log_level, log_format)
    app_config = _config(config)
    host = host if host is not None else app_config.bridge.host
    port = port if port is not None else app_config.bridge.port
    _check_transport(host, None, None, False)
    if app_config.scheduler == "auto":
        app_config.scheduler = "simulated"
    app_config.plugins.setdefault("simulator", {}).setdefault("enabled", True)
    admin_token = take_secret("ISTHMUS_ADMIN_TOKEN") or "ist_" + secrets.token_urlsafe(24)
    protect_process()
    edge_token = secrets.token_urlsafe(24)
    the_bridge = _make_bridge_or_exit(app_config, admin_token=admin_token, edge_token=edge_token,
                                      tokens_file=None, plugins=None, tls=False, host=host, port=port)
    url = f"http://{host}:{port}"
    edge_host, service = build_edge(app_config, "demo", f"ws://{host}:{port}", edge_token, None,
                                    overrides={k: v for k, v in DEMO_OVERRIDES.items()})
    if token_file:
        path = Path(token_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(admin_token + "\n")
    asyncio.run(_demo_main(the_bridge, edge_host, service, host, port, url, admin_token, log_level))


async def _demo_main(the_bridge: Bridge, edge_host: PluginHost, service: EdgeService, host: str, port: int,
                     url: str, token: str, level: str) -> None:
    import uvicorn

    from ..edge.service import run_edge

    _reload_on_sighup(the_bridge.local, edge_host)
    server = uvicorn.Server(_uvicorn_config(the_bridge, host, port, None, None, level, "asyncio"))
    the_bridge.on_exit(lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if serving.done():
        await serving
        raise typer.Exit(1)
    edge_task = asyncio.create_task(run_edge(edge_host, service))
    print(f"\n  Isthmus demo is running.\n\n  Explorer:  {url}/\n  Token:     {token}\n\n"
          f"  Try:  curl -H 'Authorization: Bearer {token}' {url}/edge/list\n"
          "  Stop with Ctrl-C.\n", flush=True)
    try:
        await serving
    finally:
        service.stop()
        try:
            await asyncio.wait_for(edge_task, 15)
        except (TimeoutError, asyncio.CancelledError):
            edge_task.cancel()
    print("  Isthmus demo stopped.", flush=True)


# -- tokens -----------------------------------------------------------------------------------

TokenRedisOpt = Annotated[str | None, typer.Option(
    "--redis", envvar="ISTHMUS_REDIS", metavar="URL",
    help="Work on the token store that bridges started with --redis share (redis://HOST:PORT/DB) "
         "instead of the token file (default: bridge.redis in isthmus.yaml, if set).")]


def _token_redis(redis_url: str | None, app_config: AppConfig) -> str | None:
    """The shared store's URL: --redis / $ISTHMUS_REDIS, else the bridge section's ``redis``."""
    url = redis_url or app_config.bridge.redis
    if url and not url.startswith(("redis://", "rediss://")):
        typer.echo("error: --redis must be a redis:// or rediss:// URL", err=True)
        raise typer.Exit(2)
    return url


def _token_store_failed(url: str, exc: Exception) -> typer.Exit:
    typer.echo(f"error: the shared token store at {url} is unreachable: {exc}", err=True)
    return typer.Exit(1)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="viewer (read only), user (use plugins), admin, metrics (scrape "
                                           "/metrics only), or edge (enrolment).")],
    name: Annotated[str | None, typer.Option(help="Who the token is for (shown in logs and whoami; "
                                              "a unique default when omitted).")] = None,
    edge: Annotated[str | None, typer.Option(help="For --role edge: edge name or glob it may register as.")] = None,
    principal: Annotated[str | None, typer.Option(help="Identity that owns jobs, files and sessions "
                                                   "(default: this token alone). Give a new token "
                                                   "the principal of an old one to rotate it.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h, 90m, 3600s or 2w "
                                                 "(default: never expires).")] = None,
    tokens_file: Annotated[str | None, typer.Option(help="Token file (default <config_dir>/tokens.json).")] = None,
    redis: TokenRedisOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a token; it is printed once and stored only as a hash (in the token file, or
    with --redis in the store that bridges share)."""
    import time

    from ..bridge.app import tokens_path
    from ..bridge.auth import ROLES, create_token, parse_lifetime

    if role not in ROLES:
        typer.echo(f"error: --role must be one of {', '.join(ROLES)}, not {role!r}", err=True)
        raise typer.Exit(2)
    lifetime = None
    if expires is not None:
        try:
            lifetime = parse_lifetime(expires)
        except ValueError as exc:
            typer.echo(f"error: --expires: {exc}", err=True)
            raise typer.Exit(2) from exc
    app_config = _config(config)
    url = _token_redis(redis, app_config)
    if url:
        from redis.exceptions import RedisError

        from ..bridge import redis_tokens

        try:
            token, entry = redis_tokens.create_token(url, role, name=name, edge=edge, principal=principal,
                                                     lifetime=lifetime)
        except (RedisError, OSError) as exc:
            raise _token_store_failed(url, exc) from exc
        where = f"the shared store at {url}"
    else:
        path = tokens_path(app_config, tokens_file)
        token, entry = create_token(path, role, name=name, edge=edge, principal=principal, lifetime=lifetime)
        where = str(path)
    until = f", expires {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(entry['expires']))}" \
        if "expires" in entry else ""
    record_cli(app_config, "token.create", token_id=entry["id"], token_role=role, token_name=entry.get("name"),
               expires=entry.get("expires"))
    typer.echo(f"created {entry['id']} ({role}{until}) in {where}", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(
    tokens_file: Annotated[str | None, typer.Option(help="Token file (default <config_dir>/tokens.json).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document, times in epoch seconds.")] = False,
    redis: TokenRedisOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List tokens (ids, names, roles, expiry, last use; never the tokens themselves), of the
    token file or, with --redis, of the store that bridges share. Last use is as the bridges
    last recorded it (every 30 s and when they stop)."""
    import json
    import time

    from ..bridge.app import tokens_path
    from ..bridge.auth import entry_expires, read_entries, read_last_used, relative_time, used_path

    app_config = _config(config)
    url = _token_redis(redis, app_config)
    if url:
        from redis.exceptions import RedisError

        from ..bridge import redis_tokens

        try:
            entries = redis_tokens.read_entries(url)
            used = redis_tokens.read_last_used(url)
        except (RedisError, OSError) as exc:
            raise _token_store_failed(url, exc) from exc
    else:
        path = tokens_path(app_config, tokens_file)
        try:
            entries = read_entries(path)
            used = read_last_used(used_path(path))
        except ValueError as exc:
            typer.echo(f"error: {exc}; fix or remove the file", err=True)
            raise typer.Exit(1) from exc
    now = time.time()
    rows: list[dict[str, Any]] = []
    for entry in entries:
        expires = entry_expires(entry)
        state = "revoked" if entry.get("revoked") else "expired" if expires is not None and expires <= now \
            else "active"
        rows.append({"id": entry["id"], "name": entry.get("name", ""), "role": entry["role"], "state": state,
                     "created": entry.get("created"),
                     "expires": None if expires is None else int(expires), "last_used": used.get(entry["id"]),
                     "revoked": entry.get("revoked"), "edge": entry.get("edge"),
                     "principal": entry.get("principal")})
    if as_json:
        typer.echo(json.dumps({"now": int(now), "tokens": rows}, indent=2))
        return
    table = [["ID", "ROLE", "NAME", "STATE", "EXPIRES", "LAST USED", "FOR"]]
    for row in rows:
        table.append([row["id"], row["role"], row["name"], row["state"],
                      relative_time(row["expires"], now), relative_time(row["last_used"], now),
                      " ".join(f"{k}={row[k]}" for k in ("edge", "principal") if row[k])])
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]))]
    for line in table:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The id shown by 'isthmus token list'.")],
    tokens_file: Annotated[str | None, typer.Option(help="Token file (default <config_dir>/tokens.json).")] = None,
    redis: TokenRedisOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a token; a running bridge notices within a second (with --redis: every bridge
    that shares the store)."""
    from ..bridge.app import tokens_path
    from ..bridge.auth import revoke_token

    app_config = _config(config)
    url = _token_redis(redis, app_config)
    if url:
        from redis.exceptions import RedisError

        from ..bridge import redis_tokens

        try:
            found = redis_tokens.revoke_token(url, token_id)
        except (RedisError, OSError) as exc:
            raise _token_store_failed(url, exc) from exc
    else:
        found = revoke_token(tokens_path(app_config, tokens_file), token_id)
    if not found:
        typer.echo(f"error: no token {token_id}", err=True)
        raise typer.Exit(1)
    record_cli(app_config, "token.revoke", token_id=token_id)
    typer.echo(f"revoked {token_id}")


# -- files ----------------------------------------------------------------------------------

def _remote(spec: str) -> tuple[str, str] | None:
    """``edge:path`` → (edge, path); a local path → None."""
    import re

    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,62}):(.*)$", spec)
    if m is None or Path(spec).exists():
        return None
    return m.group(1), m.group(2) or "~"


@app.command()
def cp(
    src: Annotated[str, typer.Argument(help="Source: a local path or EDGE:PATH.")],
    dst: Annotated[str, typer.Argument(help="Destination: a local path or EDGE:PATH.")],
    bridge: Annotated[str | None, typer.Option(help="Bridge URL (default $ISTHMUS_BRIDGE, else the one of "
                                               "`isthmus login`).")] = None,
    token: Annotated[str | None, typer.Option(help="Token (default $ISTHMUS_TOKEN, else the one of "
                                              "`isthmus login`).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing destination.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted upload.")] = False,
) -> None:
    """Copy a file to or from an edge, streamed and checked with SHA-256 (edge:path names the remote side)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from .. import ClientError
    from ..plugins.staging.client import StagingClient
    from .remote import resolve

    remote_src, remote_dst = _remote(src), _remote(dst)
    if (remote_src is None) == (remote_dst is None):
        typer.echo("error: exactly one of SRC and DST must be EDGE:PATH", err=True)
        raise typer.Exit(2)
    client = resolve(bridge, token).client()
    remote = remote_src or remote_dst
    assert remote is not None  # exactly one of them is set (checked above)
    edge = remote[0]
    try:
        staging = client.get_edge_client(edge).get_plugin("staging", client_class=StagingClient)
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), transient=False) as bar:
            task = bar.add_task(f"{src} → {dst}", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or None)

            if remote_dst is not None:
                result = staging.put(src, remote_dst[1], overwrite=overwrite, resume=resume, progress=update)
            else:
                assert remote_src is not None
                result = staging.get(remote_src[1], dst, overwrite=overwrite, progress=update)
        typer.echo(f"{result['size']} bytes, sha256 {result['sha256']}")
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        client.close()


@app.command("mcp")
def mcp_cmd(
    bridge: Annotated[str | None, typer.Option(help="Bridge URL (default $ISTHMUS_BRIDGE, else the one of "
                                               "`isthmus login`).")] = None,
    token_file: Annotated[str | None, typer.Option(help="File (mode 600) holding your API token "
                                                        "(default $ISTHMUS_TOKEN, else `isthmus login`'s).")] = None,
    log_level: Annotated[str, typer.Option(help="Log level (logs go to stderr).")] = "warning",
) -> None:
    """Serve the bridge's tools to an AI assistant over MCP on stdio, with your token's rights (docs/mcp.md)."""
    from ..mcp.stdio import run
    from .remote import resolve

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    target = resolve(bridge, take_secret("ISTHMUS_TOKEN", token_file))
    run(target.url, target.token)


# -- plugins ----------------------------------------------------------------------------------

@app.command("plugins")
def plugins_cmd(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {\"plugins\": [{id, enabled, spec}]} as JSON.")]
    = False,
) -> None:
    """List installed plugins and whether this configuration enables them (imports none)."""
    from ..runtime.host import select_plugins
    from .remote import print_json

    chosen = select_plugins(_config(config), None)
    if as_json:
        print_json({"plugins": [{"id": pid, "enabled": enabled, "spec": spec} for pid, spec, enabled in chosen]})
        return
    for pid, spec, enabled in chosen:
        typer.echo(f"{pid}\t{'enabled' if enabled else 'disabled'}\t{spec}")


# -- client commands (docs/cli.md) ----------------------------------------------------------
from .edges import edges_cmd  # noqa: E402 - the commands above are defined first; these modules use them
from .events import events_cmd  # noqa: E402
from .jobs import jobs_app  # noqa: E402
from .login import login_cmd, logout_cmd  # noqa: E402
from .tasks import tasks_app  # noqa: E402

app.command("login")(login_cmd)
app.command("logout")(logout_cmd)
app.command("edges")(edges_cmd)
app.command("events")(events_cmd)
app.add_typer(jobs_app, name="jobs")
app.add_typer(tasks_app, name="tasks")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
