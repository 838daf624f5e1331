"""What the pilots tests share (local pilots in tests/plugins, Slurm pilots in tests/slurm)."""

from __future__ import annotations

from collections.abc import Iterator

from isthmus.plugins.pilots.client import PilotsClient
from isthmus.testing.stack import Stack


def pilots_client(stack: Stack) -> Iterator[PilotsClient]:
    """A pilots client on edge ``test``; afterwards every pool still active is cancelled, so
    nothing a failed test made keeps running (with a fresh session: the edge may have restarted)."""
    yield stack.client().get_edge_client("test").get_plugin("pilots", PilotsClient)
    client = stack.client().get_edge_client("test").get_plugin("pilots", PilotsClient)
    for pool in client.list_pools():
        if pool["state"] == "ACTIVE":
            client.cancel_pool(pool["name"])
