"""Rate limits and quotas behind one interface, with an in-process backend (one replica, the default).
The Redis backend (redis_limits.py) gives several replicas the same limits with the same semantics.

Three kinds of limit, checked together and granted all-or-nothing:
- `Bucket`: a token bucket holding `limit` units that refills continuously over `period_s` (requests per minute,
  tokens per minute). A request takes its cost; its `Retry-After` is the time until the bucket holds that cost.
- `Quota`: a counter that resets when its window ends (tokens per UTC day).
- `Lease`: concurrency slots; a slot is released when the request ends (and expires after `LEASE_TTL_S`, so a
  replica that died cannot hold slots for ever).
Reservations are reconciled with `settle`: a positive amount refunds unused tokens, a negative one charges more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

LEASE_TTL_S = 3600.0
NEVER = math.inf  # a cost larger than the limit can never be granted


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    limit: int
    label: str  # what the error message calls it, e.g. "requests per minute"
    period_s: float = 60.0

    @property
    def rate(self) -> float:
        return self.limit / self.period_s


@dataclass(frozen=True, slots=True)
class Quota:
    key: str
    limit: int
    label: str
    resets_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    limit: int
    label: str


@dataclass(slots=True)
class Ask:
    """One admission: every bucket, quota and lease must grant, or none is charged."""

    buckets: list[tuple[Bucket, float]] = field(default_factory=list)
    quotas: list[tuple[Quota, int]] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    lease_id: str = ""


@dataclass(frozen=True, slots=True)
class BucketState:
    limit: int
    remaining: float
    reset_s: float  # seconds until the bucket is full again


@dataclass(slots=True)
class Verdict:
    admitted: bool
    states: dict[str, BucketState]  # every bucket in the ask, after the charge (or unchanged when refused)
    refused_by: Bucket | Quota | Lease | None = None
    retry_after: float = 0.0
    holders: dict[str, int] = field(default_factory=dict)  # lease key → slots held before this request


@dataclass(slots=True)
class Settlement:
    refunds: list[tuple[Bucket | Quota, float]] = field(default_factory=list)  # > 0 gives back, < 0 charges
    releases: list[Lease] = field(default_factory=list)
    lease_id: str = ""


class Limiter(Protocol):
    async def admit(self, ask: Ask, now: float) -> Verdict: ...

    async def settle(self, settlement: Settlement, now: float) -> None: ...

    async def peek(self, buckets: list[Bucket], now: float) -> dict[str, BucketState]: ...

    async def close(self) -> None: ...


def bucket_wait(level: float, cost: float, bucket: Bucket) -> float:
    """Seconds until a bucket at `level` holds `cost`."""
    if cost > bucket.limit:
        return NEVER
    return max(0.0, (cost - level) / bucket.rate)


class InProcessLimiter:
    """Limits held in this process's memory: exact for a single replica. Every method runs without awaiting, so
    on one event loop each call is atomic."""

    def __init__(self) -> None:
        self._levels: dict[str, tuple[float, float]] = {}  # bucket key → (level, at)
        self._counts: dict[str, tuple[int, float]] = {}    # quota key → (used, resets_at)
        self._leases: dict[str, dict[str, float]] = {}     # lease key → {lease id: expires at}

    def _level(self, bucket: Bucket, now: float) -> float:
        level, at = self._levels.get(bucket.key, (float(bucket.limit), now))
        return min(float(bucket.limit), level + max(0.0, now - at) * bucket.rate)

    def _used(self, quota: Quota, now: float) -> int:
        used, resets_at = self._counts.get(quota.key, (0, quota.resets_at))
        return 0 if now >= resets_at else used

    def _holders(self, lease: Lease, now: float) -> dict[str, float]:
        holders = self._leases.setdefault(lease.key, {})
        for lease_id in [i for i, expires in holders.items() if expires <= now]:
            del holders[lease_id]
        return holders

    def _state(self, bucket: Bucket, level: float) -> BucketState:
        return BucketState(bucket.limit, level, max(0.0, (bucket.limit - level) / bucket.rate))

    async def admit(self, ask: Ask, now: float) -> Verdict:
        levels = {bucket.key: self._level(bucket, now) for bucket, _ in ask.buckets}
        holders = {lease.key: len(self._holders(lease, now)) for lease in ask.leases}
        refusal: tuple[Bucket | Quota | Lease, float] | None = None
        for bucket, cost in ask.buckets:
            if levels[bucket.key] < cost:
                refusal = bucket, bucket_wait(levels[bucket.key], cost, bucket)
                break
        if refusal is None:
            for quota, cost in ask.quotas:
                if self._used(quota, now) + cost > quota.limit:
                    refusal = quota, NEVER if cost > quota.limit else max(1.0, quota.resets_at - now)
                    break
        if refusal is None:
            for lease in ask.leases:
                if holders[lease.key] >= lease.limit:
                    refusal = lease, 1.0
                    break
        if refusal is not None:
            states = {b.key: self._state(b, levels[b.key]) for b, _ in ask.buckets}
            return Verdict(False, states, refusal[0], refusal[1], holders)
        for bucket, cost in ask.buckets:
            levels[bucket.key] -= cost
            self._levels[bucket.key] = (levels[bucket.key], now)
        for quota, cost in ask.quotas:
            self._counts[quota.key] = (self._used(quota, now) + cost, quota.resets_at)
        for lease in ask.leases:
            self._holders(lease, now)[ask.lease_id] = now + LEASE_TTL_S
        return Verdict(True, {b.key: self._state(b, levels[b.key]) for b, _ in ask.buckets}, holders=holders)

    async def settle(self, settlement: Settlement, now: float) -> None:
        for limit, amount in settlement.refunds:
            if isinstance(limit, Bucket):
                level = min(float(limit.limit), self._level(limit, now) + amount)
                self._levels[limit.key] = (level, now)
            elif now < limit.resets_at:
                self._counts[limit.key] = (max(0, self._used(limit, now) - int(amount)), limit.resets_at)
        for lease in settlement.releases:
            self._holders(lease, now).pop(settlement.lease_id, None)

    async def peek(self, buckets: list[Bucket], now: float) -> dict[str, BucketState]:
        return {bucket.key: self._state(bucket, self._level(bucket, now)) for bucket in buckets}

    async def close(self) -> None:
        return None
