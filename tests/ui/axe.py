"""axe-core in the page under test: accessibility violations as data, for any Explorer test.

``axe.min.js`` is vendored from npm (``tests/ui/vendor/axe-core``, version in ``VERSION``) and
evaluated through Playwright, which the page's CSP does not govern: the Explorer itself never
loads it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")

_RUN = """async ([include, rules]) => {
  const context = include.length ? { include: include.map(s => [s]) } : document;
  const options = { resultTypes: ['violations'], ...(rules ? { runOnly: { type: 'rule', values: rules } } : {}) };
  const result = await window.axe.run(context, options);
  return result.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.slice(0, 5).map(n => ({ target: n.target, summary: n.failureSummary })) }));
}"""


@cache
def _source() -> str:
    return AXE.read_text(encoding="utf-8")


def check_axe(page: Any, include: list[str] | str | None = None, impacts: tuple[str, ...] = SERIOUS,
              rules: list[str] | None = None) -> list[dict[str, Any]]:
    """Violations of ``impacts`` (serious and critical by default) on ``page``, or only inside the
    elements matching ``include`` (CSS selectors); each ``{id, impact, help, helpUrl, nodes}``.

    ``assert check_axe(page) == []`` fails with every violation's rule, help text and targets.
    """
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(_source())
    selectors = [include] if isinstance(include, str) else list(include or [])
    found: list[dict[str, Any]] = page.evaluate(_RUN, [selectors, rules])
    return [v for v in found if v["impact"] in impacts]
