"""Rate limits: requests per principal, and bad credentials per source address.

Both are token buckets kept in memory per bridge (several bridges each enforce their own
share). A bucket costs a few hundred bytes; idle ones are full again, hold no information
and are dropped, so the tables hold only the callers of the last minute or so. The address
table is also capped, so no stream of unauthenticated requests can grow it without bound, and
keyed by /64 for IPv6, so picking new addresses from one's own network gains nothing.
"""

from __future__ import annotations

import ipaddress
import math
import time

PRUNE_EVERY = 60.0  # seconds between sweeps of full (idle) buckets
MAX_ADDRESSES = 16_384  # failure buckets kept at most (a few MB); the oldest go first


class Buckets:
    """Token buckets by key: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_buckets", "_pruned", "burst", "cap", "rate")

    def __init__(self, rate: float, burst: float, cap: int | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.cap = cap
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill (monotonic)]
        self._pruned = time.monotonic()

    def take(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Spend ``cost``; 0.0 when allowed, else the seconds until it would be (nothing spent)."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if now - self._pruned > PRUNE_EVERY:
                self._prune(now)
            if self.cap is not None and len(self._buckets) >= self.cap:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[key] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        return (cost - bucket[0]) / self.rate if self.rate > 0 else math.inf

    def blocked(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may spend one token again (0.0: it may now); spends nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf

    def _prune(self, now: float) -> None:
        self._pruned = now
        full = [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class Limits:
    """The bridge's two limits; a limit of 0 turns it off."""

    def __init__(self, rate: float, burst: int, failures_per_minute: int) -> None:
        self.requests = Buckets(rate, burst) if rate > 0 else None
        self.failures = (Buckets(failures_per_minute / 60.0, failures_per_minute, MAX_ADDRESSES)
                         if failures_per_minute > 0 else None)

    def request(self, principal_id: str) -> float:
        """0.0 when the principal may send this request, else seconds to wait (429 Retry-After)."""
        return self.requests.take(principal_id) if self.requests is not None else 0.0

    def address_blocked(self, address: str) -> float:
        """Seconds this address must wait before credentials from it are checked again."""
        return self.failures.blocked(address_key(address)) if self.failures is not None else 0.0

    def failed(self, address: str) -> None:
        """Count one bad credential (or refused login) from ``address``."""
        if self.failures is not None:
            self.failures.take(address_key(address))


def address_key(address: str) -> str:
    """The bucket of a source address: itself for IPv4, its /64 for IPv6 (one host holds a
    whole /64, and would otherwise get a fresh bucket per address it picks)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network((address.split("%", 1)[0], 64), strict=False).network_address)
    except ValueError:
        return address


def retry_after(seconds: float) -> bytes:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(min(seconds, 86_400.0)))).encode()
