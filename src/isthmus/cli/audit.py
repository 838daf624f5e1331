"""``isthmus audit``: read the bridge's audit log (bridge/audit.py) with filters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from .common import config_or_exit

COLUMNS = (("time", 24), ("action", 18), ("principal", 20), ("role", 7), ("source", 15), ("edge", 12),
           ("method", 6), ("status", 6), ("request_id", 16), ("path", 0))


def audit_cmd(
    since: Annotated[str | None, typer.Option(help="Only entries newer than this: 30m, 2h, 7d or an ISO time "
                                                   "(2026-11-23T10:00:00Z).")] = None,
    principal: Annotated[str | None, typer.Option(help="Only this principal (its id, e.g. tok_…, oidc:…, "
                                                       "or its name).")] = None,
    edge: Annotated[str | None, typer.Option(help="Only calls to this edge.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line, as stored.")] = False,
    file: Annotated[str | None, typer.Option(help="Audit log to read (default: bridge.audit_log, else "
                                                  "<state_dir>/audit.log).")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="isthmus.yaml to read.")] = None,
) -> None:
    """Show the audit log: who changed what, from where, when (rotated files included, oldest first)."""
    from ..bridge.audit import audit_path, parse_since, read_entries

    path = Path(file).expanduser() if file else audit_path(config_or_exit(config))
    if path is None:
        typer.echo("error: the audit log is off in this configuration (bridge.audit_log: '-')", err=True)
        raise typer.Exit(2)
    try:
        cutoff = parse_since(since) if since else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not path.exists() and not any(path.parent.glob(path.name + ".*")):
        typer.echo(f"error: no audit log at {path} (has a bridge with this configuration run?); "
                   "name another with --file", err=True)
        raise typer.Exit(1)
    entries = read_entries(path, since=cutoff, principal=principal, edge=edge)
    try:
        if json_out:
            for entry in entries:
                typer.echo(orjson.dumps(entry).decode())
            return
        typer.echo("  ".join(name.upper().ljust(width) if width else name.upper() for name, width in COLUMNS))
        for entry in entries:
            typer.echo("  ".join(_cell(entry.get(name), width) for name, width in COLUMNS))
    except PermissionError as exc:
        typer.echo(f"error: cannot read {exc.filename}: permission denied (the log is mode 600: run as "
                   "the bridge's account)", err=True)
        raise typer.Exit(1) from exc


def _cell(value: object, width: int) -> str:
    text = "-" if value is None else str(value)
    if not width:
        return text
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)
