"""``isthmus login`` and ``isthmus logout``: keep a bridge URL and a checked token for the other commands."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..sdk.client import BridgeClient
from .login_file import Login, login_path, remove_login, write_login
from .remote import USAGE, Target, bridge_errors, check_url, fail

MAX_TOKEN = 4096  # tokens are ~40 characters; a long paste is a mistake


def _read_token(token_file: str | None) -> str:
    """The token from ``token_file`` (mode 600), else stdin when it is not a terminal, else a prompt without echo."""
    if token_file:
        from .common import take_secret

        return take_secret("ISTHMUS_LOGIN_TOKEN", token_file) or ""
    if not sys.stdin.isatty():
        return sys.stdin.readline(MAX_TOKEN + 1).strip()
    return str(typer.prompt("Token", hide_input=True)).strip()


def login_cmd(
    bridge: Annotated[str | None, typer.Option("--bridge", metavar="URL",
                                               help="The bridge, e.g. https://bridge.example.org "
                                                    "(default $ISTHMUS_BRIDGE).")] = None,
    token_file: Annotated[str | None, typer.Option(help="Read the token from this file (mode 600) instead of "
                                                        "asking (or reading stdin when it is not a terminal).")]
    = None,
) -> None:
    """Check a token against the bridge and store both (mode 600), so other commands need no flags."""
    url = bridge or os.environ.get("ISTHMUS_BRIDGE") or os.environ.get("ISTHMUS_URL")
    if not url:
        fail("give the bridge: `isthmus login --bridge https://bridge.example.org`", USAGE)
    url = check_url(url)
    token = _read_token(token_file)
    if not token or len(token) > MAX_TOKEN or any(c.isspace() for c in token):
        fail("no token read: paste the token that `isthmus token create` printed (or use --token-file FILE)",
             USAGE)
    target = Target(url, token)
    with bridge_errors(target), BridgeClient(url=url, token=token, timeout=30) as client:
        who = client.whoami()
    path = write_login(Login(url, token, str(who.get("name", "")), str(who.get("role", ""))))
    typer.echo(f"logged in to {url} as {who.get('name')} ({who.get('role')}); saved in {path}")


def logout_cmd() -> None:
    """Forget the stored bridge and token (the token itself stays valid: `isthmus token revoke` ends it)."""
    path = login_path()
    typer.echo(f"removed {path}" if remove_login(path) else "not logged in")
