"""Node health and its roll-up: ONE severity order for the whole project.

    OK < UNKNOWN < WARN < CRIT

Worst wins when rolling up node → rack → room → site. UNKNOWN ranks above OK so that a
rack whose only problem is a node nobody can see is shown as UNKNOWN, never as OK; a
known problem (WARN, CRIT) outranks it. Counts by severity are always reported too.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

from ...schedulers.base import Node, NodeState


class Severity(IntEnum):
    OK = 0
    UNKNOWN = 1
    WARN = 2
    CRIT = 3

    def __str__(self) -> str:
        return self.name


class Thresholds(BaseModel):
    """Metric thresholds: at or above ``warn`` → WARN, at or above ``crit`` → CRIT."""

    model_config = ConfigDict(extra="forbid")

    temperature_warn: float = Field(75.0, description="°C")
    temperature_crit: float = Field(85.0, description="°C")
    power_warn: float | None = Field(None, description="W")
    power_crit: float | None = Field(None, description="W")


STATE_SEVERITY = {
    NodeState.idle: Severity.OK, NodeState.allocated: Severity.OK, NodeState.mixed: Severity.OK,
    NodeState.reserved: Severity.OK, NodeState.draining: Severity.WARN, NodeState.drained: Severity.WARN,
    NodeState.maint: Severity.WARN, NodeState.down: Severity.CRIT, NodeState.unknown: Severity.UNKNOWN,
}


def _metric(value: float | None, warn: float | None, crit: float | None) -> Severity:
    if value is None:
        return Severity.OK
    if crit is not None and value >= crit:
        return Severity.CRIT
    if warn is not None and value >= warn:
        return Severity.WARN
    return Severity.OK


def node_severity(node: Node, thresholds: Thresholds | None = None) -> Severity:
    """Down or not responding → CRIT; drain/maint → WARN; unknown → UNKNOWN; then metrics."""
    t = thresholds or Thresholds()
    if node.not_responding:
        return Severity.CRIT
    severity = STATE_SEVERITY.get(node.state, Severity.UNKNOWN)
    m = node.metrics or {}
    severity = max(severity, _metric(m.get("temperature"), t.temperature_warn, t.temperature_crit),
                   _metric(m.get("power"), t.power_warn, t.power_crit))
    return Severity(severity)


def worst(severities: Iterable[Severity]) -> Severity:
    """Roll-up: the worst severity, OK for an empty group."""
    return max(severities, default=Severity.OK)


def counts(severities: Iterable[Severity]) -> dict[str, int]:
    out = {s.name: 0 for s in Severity}
    for s in severities:
        out[s.name] += 1
    return out
