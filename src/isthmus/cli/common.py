"""What several command modules share: reading isthmus.yaml (or exiting with its error), telling
a loopback host from others, reading a secret from a mode-600 file. Kept apart from
``cli/__init__`` so command modules never import the package that imports them."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from ..config import AppConfig, load_app_config
from ..errors import ConfigError

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="isthmus.yaml to read "
                      "(default ./isthmus.yaml, then ~/.config/isthmus/isthmus.yaml).")]


def config_or_exit(path: str | None) -> AppConfig:
    """The configuration, or exit 2 with the ConfigError (it names the file and the key)."""
    try:
        return load_app_config(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def take_secret(env_name: str, file_path: str | None = None) -> str | None:
    """A secret from ``file_path`` (or ``$<env_name>_FILE``), else from ``$<env_name>``.

    The variables are removed from this process's environment once read, so nothing it
    starts (jobs, tasks, schedulers) inherits them. A secret file must be a regular file
    that only its owner can read or write (mode 600 or stricter).
    """
    file_path = file_path or os.environ.get(env_name + "_FILE")
    value = os.environ.pop(env_name, None)
    os.environ.pop(env_name + "_FILE", None)
    if not file_path:
        return value or None
    path = Path(file_path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        typer.echo(f"error: cannot read the secret file {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    with os.fdopen(fd) as fh:
        st = os.fstat(fh.fileno())
        if st.st_mode & 0o077 or not os.path.isfile(path):
            typer.echo(f"error: {path} is readable or writable by others (mode {st.st_mode & 0o777:o}); "
                       f"run 'chmod 600 {path}'", err=True)
            raise typer.Exit(2)
        secret = fh.read().strip()
    if not secret:
        typer.echo(f"error: the secret file {path} is empty", err=True)
        raise typer.Exit(2)
    return secret
