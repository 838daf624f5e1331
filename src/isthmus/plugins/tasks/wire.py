"""Compact batches on the wire: fields shared by every task travel once, as a template.

    {"template": {"executable": "/bin/true", "timeout": 5}, "items": [{"arguments": ["1"]}, ...]}
"""

from __future__ import annotations

from typing import Any

import orjson

GET_TASKS_MAX = 1000  # uids per get_tasks call: the edge refuses more, the client and pilots page by it


def _key(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def compact(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    if not tasks:
        return {"template": {}, "items": []}
    first = tasks[0]
    shared = {k: v for k, v in first.items()
              if all(k in t and (t[k] is v or _key(t[k]) == _key(v)) for t in tasks[1:])}
    items = [{k: v for k, v in t.items() if k not in shared} for t in tasks]
    return {"template": shared, "items": items}


def expand(batch: dict[str, Any]) -> list[dict[str, Any]]:
    template = batch.get("template") or {}
    items = batch.get("items")
    if not isinstance(template, dict) or not isinstance(items, list):
        raise ValueError("a batch is {\"template\": {...}, \"items\": [{...}, ...]}")
    return [{**template, **item} for item in items]
