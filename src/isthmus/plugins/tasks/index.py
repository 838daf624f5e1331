"""Sets of task numbers that page in order at a cost set by the page, not by the set.

A session's uids are ``task.NNNNNN`` from a counter, so each is a number. The session keeps
one :class:`NumberSet` per state; listing a state (or all of them, merged) after a cursor
then reads only the blocks the page touches:

* ``add``, ``discard``, ``in``, ``len``: O(1) (plus a list edit of the non-empty blocks,
  which are at most one per 1024 numbers, when a block appears or empties).
* ``page(after, limit)``: a bisect to the block holding ``after + 1``, then blocks in order,
  each sorted (at most 1024 numbers): O(limit + 1024), whatever the set holds.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable

SHIFT = 10  # 1024 numbers per block
UID_PREFIX = "task."


def uid_of(number: int) -> str:
    return f"{UID_PREFIX}{number:06d}"


def number_of(uid: object) -> int | None:
    """The number of a well-formed uid (exactly as :func:`uid_of` writes it), else None."""
    if not isinstance(uid, str) or not uid.startswith(UID_PREFIX):
        return None
    digits = uid[len(UID_PREFIX):]
    if not (digits.isascii() and digits.isdigit()):
        return None
    number = int(digits)
    return number if uid_of(number) == uid else None


class NumberSet:
    """Non-negative integers in blocks of 1024; ascending pages after any number."""

    __slots__ = ("_blocks", "_order", "_size")

    def __init__(self) -> None:
        self._blocks: dict[int, set[int]] = {}
        self._order: list[int] = []  # keys of the non-empty blocks, ascending
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        block = self._blocks.get(number >> SHIFT)
        return block is not None and number in block

    def add(self, number: int) -> None:
        block = self._blocks.get(number >> SHIFT)
        if block is None:
            key = number >> SHIFT
            block = self._blocks[key] = set()
            if not self._order or self._order[-1] < key:
                self._order.append(key)  # the usual case: numbers come from a counter
            else:
                bisect.insort(self._order, key)
        size = len(block)
        block.add(number)
        self._size += len(block) - size

    def discard(self, number: int) -> None:
        block = self._blocks.get(number >> SHIFT)
        if block is None:
            return
        size = len(block)
        block.discard(number)
        if size == len(block):
            return
        self._size -= 1
        if not block:
            key = number >> SHIFT
            del self._blocks[key]
            del self._order[bisect.bisect_left(self._order, key)]

    def page(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` numbers greater than ``after``, ascending."""
        out: list[int] = []
        i = bisect.bisect_left(self._order, (after + 1) >> SHIFT) if after >= 0 else 0
        while i < len(self._order) and len(out) < limit:
            block = self._blocks[self._order[i]]
            out += sorted(n for n in block if n > after)[:limit - len(out)]
            i += 1
        return out

    def snapshot(self) -> list[int]:
        """Every number, ascending (a copy: the set may change while the caller works)."""
        return [n for key in self._order for n in sorted(self._blocks[key])]


def merged_page(sets: Iterable[NumberSet], after: int, limit: int) -> list[int]:
    """Up to ``limit`` numbers greater than ``after`` from several disjoint sets, ascending."""
    return list(itertools.islice(heapq.merge(*(s.page(after, limit) for s in sets)), limit))
