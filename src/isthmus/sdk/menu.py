"""Navigation entries a plugin contributes (seed 003, ``register_menu_sections``).

Order convention (lower first): core 0-10, workload 50, custom 100-199, simulator 200.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MenuItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    label: str
    path: str
    icon: str | None = None


class MenuSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    label: str
    icon: str | None = None
    order: int = 100
    items: list[MenuItem] = Field(default_factory=list)
