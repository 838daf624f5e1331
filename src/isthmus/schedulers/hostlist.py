"""Slurm hostlist expressions: ``c[001-003,7]`` <-> ``c001 c002 c003 c7``.

One grammar for the scheduler layer and the cluster topology. Zero padding follows
the lower bound's width, as Slurm does.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_EXPANSION = 1_000_000


class HostlistError(ValueError):
    """A malformed hostlist expression."""


def _split_top(expr: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in expr:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise HostlistError(f"nested brackets in {expr!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"unbalanced ']' in {expr!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise HostlistError(f"unbalanced '[' in {expr!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _expand_ranges(body: str, expr: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise HostlistError(f"bad range {item!r} in {expr!r}")
        lo_s, hi_s = m.group(1), m.group(2) or m.group(1)
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise HostlistError(f"range {item!r} runs backwards in {expr!r}")
        if hi - lo >= MAX_EXPANSION:
            raise HostlistError(f"range {item!r} is too large in {expr!r}")
        width = len(lo_s) if lo_s.startswith("0") or len(lo_s) == len(hi_s) else 0
        out.extend(str(i).zfill(width) for i in range(lo, hi + 1))
    return out


def expand(expr: str) -> list[str]:
    """All host names of a hostlist expression, in order."""
    hosts: list[str] = []
    for part in _split_top(expr or ""):
        pieces = re.split(r"(\[[^\]]*\])", part)
        names = [""]
        for piece in pieces:
            if piece.startswith("["):
                values = _expand_ranges(piece[1:-1], expr)
                names = [n + v for n in names for v in values]
            elif "[" in piece or "]" in piece:
                raise HostlistError(f"unbalanced brackets in {expr!r}")
            else:
                names = [n + piece for n in names]
            if len(names) > MAX_EXPANSION:
                raise HostlistError(f"{expr!r} expands to too many names")
        hosts.extend(names)
    return hosts


def compress(hosts: list[str]) -> str:
    """The shortest simple hostlist for ``hosts`` (one numeric range group per prefix)."""
    groups: dict[tuple[str, int], list[int]] = {}
    order: list[tuple[str, int] | str] = []
    for host in hosts:
        m = re.match(r"^(.*?)(\d+)$", host)
        if not m:
            order.append(host)
            continue
        key = (m.group(1), len(m.group(2)))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(m.group(2)))
    out: list[str] = []
    for entry in order:
        if isinstance(entry, str):
            out.append(entry)
            continue
        prefix, width = entry
        nums = sorted(set(groups[entry]))
        ranges: list[str] = []
        start = prev = nums[0]
        for n in [*nums[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            a, b = str(start).zfill(width), str(prev).zfill(width)
            ranges.append(a if start == prev else f"{a}-{b}")
            if n is not None:
                start = prev = n
        out.append(f"{prefix}{ranges[0]}" if len(nums) == 1 else f"{prefix}[{','.join(ranges)}]")
    return ",".join(out)
