"""Workflow documents: parse, validate (the DAG, kinds, edges, references) and substitute.

Pure functions, no I/O: everything here is checked before a workflow is stored, so a bad
document is one 422 naming the step and the field, and nothing is submitted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ...errors import PluginError

KINDS = {"job": "psij", "tasks": "tasks", "transfer": "staging"}
POOL_PLUGIN = "pilots"  # a task batch with `pool:` runs in a pilot pool (the pilots plugin)
STEP_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
REF = re.compile(r"\$\{([^${}]*)\}")
MAX_STEPS = 1000
MAX_RETRIES = 20
MAX_TIMEOUT = 366 * 86400.0
MAX_COUNT = 100_000
COMMON = {"kind", "edge", "needs", "retries", "timeout", "outputs", "title"}
FIELDS = {"job": COMMON | {"spec", "executor"},
          "tasks": COMMON | {"tasks", "task", "count", "pool"},
          "transfer": COMMON - {"edge"} | {"from", "to", "files", "dest"}}


@dataclass
class Step:
    id: str
    kind: str
    raw: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    retries: int = 0
    timeout: float | None = None

    def edges(self) -> list[str]:
        """The edges this step calls (literal names; validated as such)."""
        if self.kind == "transfer":
            return [str(self.raw["from"]), str(self.raw["to"])]
        return [str(self.raw["edge"])]

    def plugin(self) -> str:
        if self.kind == "tasks" and self.raw.get("pool") is not None:
            return POOL_PLUGIN
        return KINDS[self.kind]


@dataclass
class Workflow:
    name: str
    params: dict[str, Any]
    steps: dict[str, Step]  # in document order
    order: list[str]  # a topological order


class Invalid(PluginError):
    """A 422 whose detail names every problem: ``{message, errors: [{field, problem}]}``."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        first = errors[0]
        message = f"invalid workflow: {first['field']}: {first['problem']}" + (
            f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        super().__init__({"message": message, "errors": errors}, 422)
        self.errors = errors


def load_document(document: Any) -> dict[str, Any]:
    """A document given as a mapping, or as YAML/JSON text (JSON is YAML)."""
    if isinstance(document, str):
        try:
            document = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise Invalid([{"field": "document", "problem": f"not YAML or JSON: {exc}"}]) from exc
    if not isinstance(document, dict):
        raise Invalid([{"field": "document", "problem": "must be a mapping with `steps`"}])
    return document


def parse(document: Any, params: Mapping[str, Any] | None = None,
          topology: Mapping[str, Any] | None = None) -> Workflow:
    """Check a document completely; ``topology`` (edge → summary) checks edges and plugins."""
    doc = load_document(document)
    errors: list[dict[str, str]] = []

    def bad(where: str, problem: str) -> None:
        errors.append({"field": where, "problem": problem})

    unknown_top = sorted(set(doc) - {"name", "params", "steps", "description"})
    for key in unknown_top:
        bad(key, "unknown key (allowed: name, description, params, steps)")
    name = doc.get("name", "workflow")
    if not isinstance(name, str) or not name or len(name) > 200:
        bad("name", "must be a non-empty string of at most 200 characters")
        name = "workflow"
    defaults = doc.get("params") or {}
    if not isinstance(defaults, dict):
        bad("params", "must be a mapping of name to default value")
        defaults = {}
    given = dict(params or {})
    for key in sorted(set(given) - set(defaults)):
        bad(f"params.{key}", "is not declared in the document's params")
    merged = {**defaults, **given}
    steps = _steps(doc.get("steps"), bad)
    for step in steps.values():
        _check_step(step, steps, bad)
    order = _order(steps, bad)
    if not errors:
        reach = _ancestors(steps, order)
        for step in steps.values():
            for where, ref in _refs(step.raw, f"steps.{step.id}"):
                _check_ref(ref, where, step, merged, reach[step.id], bad)
        if topology is not None:
            for step in steps.values():
                _check_edges(step, topology, bad)
    if errors:
        raise Invalid(errors)
    return Workflow(name, merged, steps, order)


def _steps(raw: Any, bad: Any) -> dict[str, Step]:
    if isinstance(raw, dict):
        items = [(k, v) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [((v or {}).get("id") if isinstance(v, dict) else None, v) for v in raw]
    else:
        bad("steps", "must be a mapping of step id to step (or a list of steps with `id`)")
        return {}
    if not items:
        bad("steps", "a workflow needs at least one step")
    if len(items) > MAX_STEPS:
        bad("steps", f"at most {MAX_STEPS} steps")
        return {}
    steps: dict[str, Step] = {}
    for sid, body in items:
        where = f"steps.{sid}"
        if not isinstance(sid, str) or not STEP_ID.match(sid):
            bad(where if isinstance(sid, str) else "steps", "a step id is a letter then letters, digits, _ or - "
                "(at most 64)")
            continue
        if sid in steps:
            bad(where, "duplicate step id")
            continue
        if not isinstance(body, dict):
            bad(where, "must be a mapping")
            continue
        body = {k: v for k, v in body.items() if k != "id"}
        kind = body.get("kind")
        if kind not in KINDS:
            bad(f"{where}.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
            continue
        steps[sid] = Step(sid, kind, body)
    return steps


def _check_step(step: Step, steps: Mapping[str, Step], bad: Any) -> None:
    where = f"steps.{step.id}"
    raw = step.raw
    for key in sorted(set(raw) - FIELDS[step.kind]):
        bad(f"{where}.{key}", f"unknown key for a {step.kind} step (allowed: {', '.join(sorted(FIELDS[step.kind]))})")
    needs = raw.get("needs", [])
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        bad(f"{where}.needs", "must be a step id or a list of step ids")
        needs = []
    for need in needs:
        if need not in steps:
            bad(f"{where}.needs", f"no step named {need!r}")
        elif need == step.id:
            bad(f"{where}.needs", "a step cannot need itself")
    step.needs = [n for n in dict.fromkeys(needs) if n in steps and n != step.id]
    retries = raw.get("retries", 0)
    if type(retries) is not int or not 0 <= retries <= MAX_RETRIES:
        bad(f"{where}.retries", f"must be a whole number from 0 to {MAX_RETRIES}")
    else:
        step.retries = retries
    timeout = raw.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) \
                or not 0 < timeout <= MAX_TIMEOUT:
            bad(f"{where}.timeout", f"must be seconds, more than 0 and at most {MAX_TIMEOUT:g}")
        else:
            step.timeout = float(timeout)
    outputs = raw.get("outputs", {})
    if not isinstance(outputs, dict) or not all(isinstance(k, str) for k in outputs):
        bad(f"{where}.outputs", "must be a mapping of output name to value")
    for key in ("edge",) if step.kind != "transfer" else ("from", "to"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            bad(f"{where}.{key}", "must name an edge (edge names are literal, not substituted)")
    if step.kind == "job":
        if not isinstance(raw.get("spec"), dict):
            bad(f"{where}.spec", "must be a psij job spec (a mapping with `executable`)")
    elif step.kind == "tasks":
        has_list, has_one = "tasks" in raw, "task" in raw
        if has_list == has_one:
            bad(f"{where}.tasks", "give either `tasks` (a list) or `task` with `count`")
        elif has_list and (not isinstance(raw["tasks"], list | str) or not raw["tasks"]):
            bad(f"{where}.tasks", "must be a non-empty list of task specs")
        elif has_one and not isinstance(raw["task"], dict):
            bad(f"{where}.task", "must be one task spec (a mapping); `${index}` numbers its copies")
        count = raw.get("count")
        if has_one and not (isinstance(count, str) or (type(count) is int and 1 <= count <= MAX_COUNT)):
            bad(f"{where}.count", f"must be a whole number from 1 to {MAX_COUNT} (or a ${{params.x}})")
        if "count" in raw and not has_one:
            bad(f"{where}.count", "goes with `task`, not `tasks`")
        pool = raw.get("pool")
        if pool is not None and (not isinstance(pool, str) or not pool):
            bad(f"{where}.pool", "must name a pilot pool")
    else:
        if not isinstance(raw.get("files"), list | str):
            bad(f"{where}.files", "must be a list of paths on the source edge (or a ${...} that gives one)")
        if not isinstance(raw.get("dest"), str) or not raw.get("dest"):
            bad(f"{where}.dest", "must be a directory on the target edge")


def _order(steps: Mapping[str, Step], bad: Any) -> list[str]:
    """Kahn's algorithm; a cycle is reported with the steps on it."""
    indegree = {sid: len(s.needs) for sid, s in steps.items()}
    users: dict[str, list[str]] = {sid: [] for sid in steps}
    for sid, step in steps.items():
        for need in step.needs:
            users[need].append(sid)
    ready = [sid for sid, n in indegree.items() if n == 0]
    order: list[str] = []
    while ready:
        sid = ready.pop()
        order.append(sid)
        for user in users[sid]:
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    if len(order) < len(steps):
        cycle = _cycle(steps, {sid for sid, n in indegree.items() if n > 0})
        bad(f"steps.{cycle[0]}.needs", f"a cycle: {' → '.join([*cycle, cycle[0]])}")
    return order


def _cycle(steps: Mapping[str, Step], left: set[str]) -> list[str]:
    """One cycle among ``left`` (every step there lies on or behind a cycle)."""
    start = min(left)
    path: list[str] = []
    seen: dict[str, int] = {}
    sid = start
    while sid not in seen:
        seen[sid] = len(path)
        path.append(sid)
        sid = next(n for n in steps[sid].needs if n in left)
    return path[seen[sid]:]


def _ancestors(steps: Mapping[str, Step], order: list[str]) -> dict[str, set[str]]:
    reach: dict[str, set[str]] = {}
    for sid in order:
        acc: set[str] = set()
        for need in steps[sid].needs:
            acc |= reach[need] | {need}
        reach[sid] = acc
    return reach


def _refs(value: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, m.group(1).strip()) for m in REF.finditer(value)]
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _refs(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _refs(v, f"{where}[{i}]")]
    return []


def _check_ref(ref: str, where: str, step: Step, params: Mapping[str, Any], ancestors: set[str], bad: Any) -> None:
    parts = ref.split(".")
    if parts[0] == "params":
        if len(parts) != 2 or parts[1] not in params:
            bad(where, f"${{{ref}}}: no such parameter (declare it under params)")
    elif parts[0] == "steps":
        if len(parts) < 4 or parts[2] != "outputs":
            bad(where, f"${{{ref}}}: write ${{steps.<id>.outputs.<name>}}")
        elif parts[1] not in ancestors:
            bad(where, f"${{{ref}}}: step {parts[1]!r} is not among this step's needs (directly or not)")
    elif parts == ["workflow", "id"] or parts == ["workflow", "name"]:
        return
    elif parts[0] == "self":
        if not where.startswith(f"steps.{step.id}.outputs"):
            bad(where, f"${{{ref}}}: `self` is the step's own outputs, only in its `outputs`")
    elif parts == ["index"]:
        if step.kind != "tasks" or "task" not in step.raw:
            bad(where, "${index} is only for `task` with `count`")
    else:
        bad(where, f"${{{ref}}}: unknown reference (params.x, steps.<id>.outputs.<name>, workflow.id, index)")


def _check_edges(step: Step, topology: Mapping[str, Any], bad: Any) -> None:
    where = f"steps.{step.id}"
    keys = ["from", "to"] if step.kind == "transfer" else ["edge"]
    plugin = step.plugin()
    for key, edge in zip(keys, step.edges(), strict=True):
        info = topology.get(edge)
        if info is None:
            bad(f"{where}.{key}", f"no edge named {edge!r} is connected")
            continue
        plugins = info.get("plugins") or {}
        if plugin not in plugins:
            bad(f"{where}.{key}", f"edge {edge!r} has no {plugin} plugin, which a {step.kind} step needs")


# -- substitution ---------------------------------------------------------------------------------

class Unresolved(PluginError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 422)


def lookup(ref: str, context: Mapping[str, Any]) -> Any:
    """``params.x``, ``steps.sim.outputs.files[.key...]``, ``workflow.id``, ``index``."""
    value: Any = context
    for part in ref.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise Unresolved(f"${{{ref}}} has no value (at {part!r})")
    return value


def substitute(value: Any, context: Mapping[str, Any]) -> Any:
    """Replace ``${...}``: a string that is one reference becomes its value (a list stays a
    list); references inside longer strings become text (lists joined by spaces)."""
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return lookup(whole.group(1).strip(), context)
        return REF.sub(lambda m: _text(lookup(m.group(1).strip(), context)), value)
    if isinstance(value, dict):
        return {k: substitute(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, context) for v in value]
    return value


def _text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
