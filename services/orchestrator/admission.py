"""Admission control: shed a request at once when the time to first token it would see misses its tier's share of
the TTFT SLO, instead of letting it wait and miss it anyway.

The model, per deployment, is deliberately simple and calibrates itself from what the router already observes:

- each finished request reports its TTFT and `depth`, the number of requests in flight on the deployment when it
  started. `ttft / (depth + 1)` is what one place in the queue costs; an EWMA of it (`per_request_s`) follows
  changes in load and speed.
- a new request that would join `n` requests in flight is predicted to wait `per_request_s × (n + 1)`. Linear in
  queue depth: on a batching engine this is a local estimate around the depths seen lately, which is where admission
  keeps the deployment anyway.
- it is shed when the prediction exceeds `share(tier) × SLO` (free 0.5, plus 0.8, enterprise 1.0; a request without
  a tier counts as 1.0), so as the queue grows the lower tiers are shed first. A request with nothing ahead of it is
  never shed: the queue cannot be what makes it late, and admitting it keeps samples coming, so a stale pessimistic
  estimate cannot lock a deployment out.
- `Retry-After` is the time for the queue to drain to the deepest depth this tier is admitted at, from the measured
  completion rate (completions in the last `rate_window_s`); with no completions measured, the predicted excess over
  the budget. Clamped to [1, `max_retry_after_s`] seconds.

The hard bound, `max_queue` per deployment, is the router's own check and holds for every tier, on or off.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIER_SHARES = {"free": 0.5, "plus": 0.8, "enterprise": 1.0}


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    enabled: bool = True
    ttft_slo_s: float = 0.5
    tier_shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIER_SHARES))
    ewma_alpha: float = 0.2  # weight of the newest TTFT sample
    rate_window_s: float = 10.0  # completions per second are counted over this window
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.ttft_slo_s <= 0:
            raise ValueError("admission: the TTFT SLO must be positive")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError("admission: ewma_alpha must be in (0, 1]")
        if self.rate_window_s <= 0 or self.max_retry_after_s < 1:
            raise ValueError("admission: rate_window_s must be positive and max_retry_after_s at least 1")
        if any(share <= 0 for share in self.tier_shares.values()):
            raise ValueError("admission: tier shares must be positive")

    def budget_s(self, tier: str | None) -> float:
        """The TTFT this tier may be predicted to see and still be admitted."""
        return self.ttft_slo_s * (self.tier_shares.get(tier, 1.0) if tier else 1.0)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, *, ttft_slo_ms: float) -> AdmissionPolicy:
        raw = raw or {}
        return cls(enabled=bool(raw.get("enabled", True)), ttft_slo_s=float(ttft_slo_ms) / 1000,
                   tier_shares={**DEFAULT_TIER_SHARES, **{str(k): float(v)
                                                          for k, v in (raw.get("tier_shares") or {}).items()}},
                   ewma_alpha=float(raw.get("ewma_alpha", 0.2)), rate_window_s=float(raw.get("rate_window_s", 10)),
                   max_retry_after_s=float(raw.get("max_retry_after_s", 30)))


@dataclass(frozen=True, slots=True)
class Rejection:
    predicted_ttft_s: float
    budget_s: float
    retry_after_s: float


@dataclass(slots=True)
class _Load:
    per_request_s: float | None = None  # EWMA of ttft / (depth + 1)
    completions: deque[float] = field(default_factory=deque)  # when requests finished, within the rate window


class AdmissionController:
    def __init__(self, policy: AdmissionPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or AdmissionPolicy()
        self.clock = clock
        self._loads: dict[str, _Load] = {}

    def _load(self, deployment: str) -> _Load:
        return self._loads.setdefault(deployment, _Load())

    # -- feedback ----------------------------------------------------------------------------------------------------
    def observe_ttft(self, deployment: str, ttft_s: float, depth: int) -> None:
        if ttft_s < 0 or depth < 0:
            raise ValueError("admission: TTFT and depth must not be negative")
        load, sample = self._load(deployment), ttft_s / (depth + 1)
        alpha = self.policy.ewma_alpha
        load.per_request_s = sample if load.per_request_s is None else alpha * sample + (1 - alpha) * load.per_request_s

    def observe_completion(self, deployment: str) -> None:
        self._load(deployment).completions.append(self.clock())

    # -- estimates ---------------------------------------------------------------------------------------------------
    def completion_rate(self, deployment: str) -> float | None:
        """Completions per second over the last `rate_window_s`; None when there were none."""
        load, now = self._load(deployment), self.clock()
        while load.completions and load.completions[0] < now - self.policy.rate_window_s:
            load.completions.popleft()
        return len(load.completions) / self.policy.rate_window_s if load.completions else None

    def predicted_ttft(self, deployment: str, in_flight: int) -> float | None:
        """The TTFT a request joining `in_flight` others would see; None before any TTFT was measured."""
        per_request = self._load(deployment).per_request_s
        return None if per_request is None else per_request * (in_flight + 1)

    # -- deciding ----------------------------------------------------------------------------------------------------
    def check(self, deployment: str, in_flight: int, tier: str | None) -> Rejection | None:
        """None to admit; a Rejection (with how long to wait) when the request would miss its tier's budget."""
        predicted = self.predicted_ttft(deployment, in_flight)
        if not self.policy.enabled or in_flight == 0 or predicted is None:
            return None
        budget = self.policy.budget_s(tier)
        if predicted <= budget:
            return None
        per_request = self._load(deployment).per_request_s or 0.0
        admitted_depth = max(0, math.floor(budget / per_request) - 1) if per_request > 0 else 0
        excess = in_flight - admitted_depth  # requests that must finish before this tier fits again
        rate = self.completion_rate(deployment)
        wait = excess / rate if rate else predicted - budget
        return Rejection(predicted, budget, min(max(wait, 1.0), self.policy.max_retry_after_s))
