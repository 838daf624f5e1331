"""A third-party plugin installed through an entry point (platform tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from isthmus import MenuItem, MenuSection, Plugin


def _log(line: str) -> None:
    path = os.environ.get("FAKE_LIFECYCLE_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    color: str = "red"
    size: int = 1
    limit: int = 10
    show_menu: bool = True


class PluginFake(Plugin):
    plugin_name = "fake"
    title = "Fake"
    version = "1.0"
    config_model = FakeConfig

    def register_routes(self, router: APIRouter) -> None:
        @router.get("/settings")
        async def settings() -> dict[str, Any]:
            return self.config.model_dump()

    def register_menu_sections(self) -> list[MenuSection]:
        if not self.config.show_menu:
            return []
        return [MenuSection(id="fake", label="Fake", order=150,
                            items=[MenuItem(id="fake-home", label="Home", path="/fake")])]

    async def on_startup(self) -> None:
        _log("startup fake")

    async def on_shutdown(self) -> None:
        _log("shutdown fake")

    async def on_config_reload(self, config: FakeConfig) -> None:
        _log(f"reload fake size={config.size}")


class PluginAfterFake(Plugin):
    """Sorted before 'fake' by name, but requires it: starts after, stops before."""

    plugin_name = "afake"
    requires = ("fake",)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="afake", label="After fake", order=120)]

    async def on_startup(self) -> None:
        _log("startup afake")

    async def on_shutdown(self) -> None:
        _log("shutdown afake")


Path(os.environ.get("FAKE_IMPORT_MARKER", "/dev/null")).touch() if os.environ.get("FAKE_IMPORT_MARKER") else None
