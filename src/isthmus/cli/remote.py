"""What every client command shares: which bridge and token, errors as exit codes, output.

The bridge URL comes from ``--bridge``, else ``$ISTHMUS_BRIDGE`` (``$ISTHMUS_URL``: its older
name), else the login file (``isthmus login``). The token from ``--token``, else
``$ISTHMUS_TOKEN``, else the login file — only when the bridge is the one the file was made
for, so pointing a command at another bridge never sends it your stored token — else
``$ISTHMUS_ADMIN_TOKEN`` (older scripts). Exit codes are in one table, :data:`EXIT`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer

from ..errors import BridgeTimeout, ClientError, TransportError
from ..sdk.client import BridgeClient
from .login_file import LoginFileError, read_login

# The exit codes of the client commands (docs/cli.md lists them).
OK = 0
FAILED = 1        # a job FAILED, a task failed, the bridge or edge said no (4xx/5xx other than below)
USAGE = 2         # bad arguments, no bridge configured, an unreadable login file
CANCELLED = 3     # jobs wait: the job was CANCELLED
TIMED_OUT = 4     # jobs wait / tasks run: --timeout passed first
UNREACHABLE = 69  # no connection to the bridge (EX_UNAVAILABLE)
BRIDGE_SLOW = 75  # the bridge did not answer in time (EX_TEMPFAIL: try again)
REFUSED = 77      # the bridge refused the token (401) or its role (403) (EX_NOPERM)
EXIT = {"ok": OK, "failed": FAILED, "usage": USAGE, "cancelled": CANCELLED, "timeout": TIMED_OUT,
        "unreachable": UNREACHABLE, "bridge timeout": BRIDGE_SLOW, "refused": REFUSED}

BridgeOpt = Annotated[str | None, typer.Option(
    "--bridge", metavar="URL", help="Bridge URL (default $ISTHMUS_BRIDGE, else the one of `isthmus login`).")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", help="API token (default $ISTHMUS_TOKEN, else the one of `isthmus login`; "
                    "prefer those: a flag shows in `ps`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = FAILED) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def normalize_url(url: str) -> str:
    """``url`` as compared with the login file's: scheme and host lower-cased, no trailing slash."""
    parts = urlsplit(url.strip())
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl().rstrip("/")


def check_url(url: str) -> str:
    """An http(s) URL, normalized; plain http only to this machine (a token would cross the network in clear)."""
    from .common import is_loopback

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"the bridge URL must look like https://bridge.example.org or http://127.0.0.1:8000, not {url!r}",
             USAGE)
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not os.environ.get(
            "ISTHMUS_ALLOW_INSECURE_HTTP"):
        fail(f"refusing to send a token in clear to {parts.hostname} over http://; use https:// "
             "(or set ISTHMUS_ALLOW_INSECURE_HTTP=1 if you really mean it)", USAGE)
    return normalize_url(url)


@dataclass(frozen=True)
class Target:
    """A bridge and the token to use there."""

    url: str
    token: str

    def client(self, timeout: float = 60.0) -> BridgeClient:
        return BridgeClient(url=self.url, token=self.token, timeout=timeout)


def resolve(bridge: str | None = None, token: str | None = None) -> Target:
    """The bridge and token of a client command (see the module docstring for the order)."""
    try:
        saved = read_login()
    except LoginFileError as exc:
        fail(str(exc), USAGE)
    url = bridge or os.environ.get("ISTHMUS_BRIDGE") or os.environ.get("ISTHMUS_URL") or (
        saved.url if saved else None)
    if not url:
        fail("no bridge configured: run `isthmus login --bridge URL`, or set ISTHMUS_BRIDGE and ISTHMUS_TOKEN",
             USAGE)
    url = check_url(url)
    token = token or os.environ.get("ISTHMUS_TOKEN") or None
    if not token and saved is not None and saved.url == url:
        token = saved.token
    token = token or os.environ.get("ISTHMUS_ADMIN_TOKEN") or None
    if not token:
        hint = f" (your login is for {saved.url})" if saved is not None else ""
        fail(f"no token for {url}{hint}: run `isthmus login --bridge {url}`, or set ISTHMUS_TOKEN", USAGE)
    return Target(url, token)


@contextlib.contextmanager
def bridge_errors(target: Target | None = None) -> Iterator[None]:
    """Turn the client's errors into a message saying what to do and an exit code from :data:`EXIT`."""
    where = target.url if target is not None else "the bridge"
    try:
        yield
    except BridgeTimeout as exc:
        fail(f"{exc}; the bridge at {where} is slow or overloaded: try again", BRIDGE_SLOW)
    except TransportError as exc:
        fail(f"{exc}; check that the bridge runs and the URL is right (`isthmus login --bridge URL`)",
             UNREACHABLE)
    except ClientError as exc:
        if exc.status_code == 401:
            fail(f"the bridge at {where} refused the token: it is wrong, expired or revoked; "
                 f"run `isthmus login --bridge {where}` with a valid one", REFUSED)
        if exc.status_code == 403:
            fail(f"{exc} (not allowed: by your token's role or by the edge's policy, as the message says)",
                 REFUSED)
        fail(str(exc), FAILED)


def print_json(value: Any) -> None:
    """One JSON document on stdout (sorted keys, so scripts and diffs see a stable shape)."""
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; ``-`` for a missing value; the last column unpadded."""
    cells = [[str(h) for h in headers], *[["-" if c is None or c == "" else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    for row in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
        typer.echo(f"{line}  {row[-1]}" if len(headers) > 1 else row[-1])


def is_tty(stream: Any = None) -> bool:
    return bool(getattr(stream or sys.stdout, "isatty", lambda: False)())
