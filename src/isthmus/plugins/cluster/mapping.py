"""Scheduler node names → topology names, for sites whose names differ.

    exact:   {"nid000123": "c123"}
    patterns: [{"match": "^nid0*(\\d+)$", "replace": "c\\1"}]   (Python regular expressions)

Names that map to nothing placed are reported by ``apply`` (``unmatched``), never dropped.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PatternRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str
    replace: str

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class NodeMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: dict[str, str] = Field(default_factory=dict)
    patterns: list[PatternRule] = Field(default_factory=list)

    def translate(self, name: str) -> str:
        if name in self.exact:
            return self.exact[name]
        for rule in self.patterns:
            if re.match(rule.match, name):
                return re.sub(rule.match, rule.replace, name)
        return name

    def apply(self, names: list[str], placed: set[str]) -> tuple[dict[str, str], list[str]]:
        """(scheduler name → topology name, scheduler names that land nowhere)."""
        mapped: dict[str, str] = {}
        unmatched: list[str] = []
        for name in names:
            target = self.translate(name)
            mapped[name] = target
            if target not in placed:
                unmatched.append(name)
        return mapped, unmatched

    def describe(self) -> dict[str, Any]:
        return self.model_dump()
