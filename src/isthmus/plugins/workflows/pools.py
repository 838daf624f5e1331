"""Submit-time check of `pool:` steps: the pool must exist on its edge for the workflow's owner.

``parse`` is pure and checks edges against the topology; pools live in each edge's pilots
plugin, so this asks it (``list_pools``, once per edge with pool steps, as the caller: a pool of
someone else's is unknown, as it would be at run time). An unknown pool is then a 422 naming
``steps.<id>.pool`` before anything is stored, not a step failing later.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...errors import PluginError
from ...sdk.calls import EdgeCallError, EdgeCalls
from ...types import Principal
from .spec import POOL_PLUGIN, Invalid, Unresolved, Workflow, substitute

LIST_TIMEOUT = 30.0


def pool_steps(workflow: Workflow) -> dict[str, list[tuple[str, str]]]:
    """Edge → [(step id, pool name)]; a name that needs a step's outputs or the workflow id is
    known only at run time and is left out."""
    context = {"params": workflow.params, "workflow": {"name": workflow.name}}
    found: dict[str, list[tuple[str, str]]] = {}
    for step in workflow.steps.values():
        raw = step.raw.get("pool")
        if step.kind != "tasks" or raw is None:
            continue
        try:
            name = substitute(raw, context)
        except Unresolved:
            continue
        found.setdefault(str(step.raw["edge"]), []).append((step.id, str(name)))
    return found


async def check_pools(workflow: Workflow, calls: EdgeCalls, principal: Principal | None) -> None:
    """``Invalid`` (422) for every pool step whose pool its edge does not list for ``principal``."""
    wanted = pool_steps(workflow)

    async def pools_of(edge: str) -> dict[str, Any]:
        try:
            answer = await calls.call(edge, "GET", f"/{POOL_PLUGIN}/list_pools", principal=principal,
                                      timeout=LIST_TIMEOUT)
        except EdgeCallError as exc:
            raise PluginError(f"cannot ask edge {edge!r} which pools exist: {exc}",
                              exc.status if exc.status in (401, 403) else 503) from exc
        return {p["name"]: p["state"] for p in answer["pools"]}

    listed = await asyncio.gather(*(pools_of(edge) for edge in wanted))
    errors: list[dict[str, str]] = []
    for (edge, steps), pools in zip(wanted.items(), listed, strict=True):
        for sid, name in steps:
            state = pools.get(name)
            if state is None:
                errors.append({"field": f"steps.{sid}.pool",
                               "problem": f"edge {edge!r} has no pool named {name!r} (create it with create_pool)"})
            elif state != "ACTIVE":
                errors.append({"field": f"steps.{sid}.pool", "problem": f"pool {name!r} on edge {edge!r} is {state}"})
    if errors:
        raise Invalid(errors)
