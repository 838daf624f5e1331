"""Small types shared by the bridge, the edge and plugins."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

JSON = dict[str, Any]
NotifyFn = Callable[[str, Any], None]


class Role(IntEnum):
    """Client roles, ordered: a higher role can do everything a lower one can."""

    metrics = 0  # scrapes /metrics (and edges' /_edge/metrics) and nothing else
    viewer = 1  # GET/HEAD only
    user = 2  # plugins, any method
    admin = 3  # plus edge disconnect, bridge terminate, plugin config

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return cls[value]
        except KeyError:
            raise ValueError(f"unknown role {value!r}; expected one of viewer, user, admin, metrics") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: travels with every request from the bridge to the edge.

    ``id`` is the identity that owns things (sessions, jobs, files, events); ``name`` is
    only what is shown. Each token has its own id (its token id unless the admin gave
    several tokens one ``--principal``), so two tokens with the same display name, or a
    viewer named like a user, never see each other's things. In-process callers that
    give no id get their name as id.
    """

    name: str
    role: Role
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", self.name)

    def can(self, role: Role) -> bool:
        return self.role >= role

    @property
    def is_admin(self) -> bool:
        return self.role >= Role.admin

    def owns(self, owner_id: str | None) -> bool:
        """May this principal see or act on something owned by ``owner_id``?"""
        return self.is_admin or owner_id is None or owner_id == self.id

    def to_wire(self) -> list[Any]:
        return [self.name, int(self.role), self.id]

    @classmethod
    def from_wire(cls, value: Any) -> Principal | None:
        if not value:
            return None
        name, role, *rest = value
        return cls(str(name), Role(int(role)), str(rest[0]) if rest else "")


# The principal of the request being served. Set by the edge (and the bridge for its
# own plugins) around each plugin call; None for in-process callers such as tests.
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "isthmus_principal", default=None)
