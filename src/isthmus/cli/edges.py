"""``isthmus edges``: the connected edges, their plugins and health.

What it costs: the listing is ``/edge/list`` page by page (1,000 edges a request), and the
health it shows by default comes from those pages alone — a plugin that failed to load,
configure or start carries its error in the manifest. ``--health`` adds one call per edge
that runs the ``cluster`` plugin (its node summary by severity), eight at a time: with
10,000 edges that is 10,000 small requests, so it is asked for, never the default.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import typer

from ..errors import ClientError
from ..sdk.client import BridgeClient
from .remote import BridgeOpt, JsonOpt, TokenOpt, bridge_errors, print_json, print_table, resolve

HEALTH_WORKERS = 8  # cluster summaries asked at once with --health


def _plugin_errors(entry: dict[str, Any]) -> dict[str, str]:
    return {pid: str(m["error"]) for pid, m in (entry.get("plugins") or {}).items()
            if isinstance(m, dict) and m.get("error")}


def _cluster_health(client: BridgeClient, edge: str) -> dict[str, Any]:
    """The cluster plugin's node counts by severity on ``edge``, or the error reading them."""
    from ..plugins.cluster.client import ClusterClient

    try:
        cluster = client.get_edge_client(edge).get_plugin("cluster", ClusterClient, register=False)
        summary = cluster.summary()
    except ClientError as exc:
        return {"error": str(exc)}
    return {"nodes": summary.get("total"), "by_severity": summary.get("by_severity"), "age": summary.get("age")}


def _health_text(row: dict[str, Any]) -> str:
    errors = row["plugin_errors"]
    parts = [f"{len(errors)} plugin error(s): {', '.join(sorted(errors))}"] if errors else ["ok"]
    cluster = row.get("cluster")
    if cluster:
        if "error" in cluster:
            parts.append(f"cluster: {cluster['error']}")
        else:
            sev = cluster.get("by_severity") or {}
            bad = ", ".join(f"{n} {s}" for s, n in sev.items() if s != "OK" and n)
            parts.append(f"{cluster.get('nodes')} nodes" + (f" ({bad})" if bad else " all OK"))
    return "; ".join(parts)


def _age(since: Any) -> str:
    if not isinstance(since, (int, float)):
        return "-"
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def edges_cmd(
    plugin: Annotated[str | None, typer.Option(help="Only edges that run this plugin.")] = None,
    name: Annotated[str | None, typer.Option(help="Only edges whose name matches this glob, e.g. 'hpc*'.")] = None,
    health: Annotated[bool, typer.Option("--health", help="Also ask each edge's cluster plugin for its nodes' "
                                                          "health (one request per such edge).")] = False,
    as_json: JsonOpt = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """List connected edges with their plugins and health (plugin load errors; --health: node health)."""
    target = resolve(bridge, token)
    with bridge_errors(target), target.client() as client:
        edges = client.list_edges(plugin=plugin, name=name)
        rows: list[dict[str, Any]] = []
        for edge, entry in edges.items():
            plugins = entry.get("plugins") or {}
            rows.append({"edge": edge, "host": entry.get("host"), "connected_at": entry.get("connected_at"),
                         "plugins": {pid: (m or {}).get("version") for pid, m in plugins.items()},
                         "plugin_errors": _plugin_errors(entry)})
        if health:
            asked = [r for r in rows if "cluster" in r["plugins"] and "cluster" not in r["plugin_errors"]]
            with ThreadPoolExecutor(HEALTH_WORKERS) as pool:
                for row, result in zip(asked, pool.map(lambda r: _cluster_health(client, r["edge"]), asked),
                                       strict=True):
                    row["cluster"] = result
    if as_json:
        print_json({"edges": rows})
        return
    if not rows:
        typer.echo("no edges connected" + (" that match" if plugin or name else ""))
        return
    print_table(["EDGE", "HOST", "UP", "PLUGINS", "HEALTH"],
                [[r["edge"], r["host"], _age(r["connected_at"]), ",".join(sorted(r["plugins"])), _health_text(r)]
                 for r in rows])
