"""Admission control: shed a request at once when the time to first token it would see misses its tier's share of
the TTFT SLO, instead of letting it wait and miss it anyway.

The model, per deployment, is deliberately simple and calibrates itself from what the router already observes:

- each admitted request reports its TTFT from its admission to its first token delivered to the client (what
  the queue, the engine and the output guard add; time spent before admission — auth, input guard, retrieval — is
  not the queue's doing, and shedding cannot win it back) and `depth`, the number of requests in flight on the
  deployment when it was admitted.
- TTFT is modelled as a line in queue depth, `base + slope × depth`, fitted by exponentially weighted least squares
  (weight `ewma_alpha` for the newest sample) so it follows changes in load and speed. The base is what every
  request pays whatever the queue (tokenising, its own prefill, the output guard); the slope is what each request
  ahead adds. A line through the origin (`ttft / (depth + 1)` per place) would charge the base again for every
  place, and so shed far too early once the pipeline's fixed costs are counted. While the samples span too few
  depths to fit a slope, every place costs the same (`ttft / (depth + 1)`); the fitted slope is never taken below a
  tenth of that, as a request ahead is never free. On a batching engine this is a local estimate around the depths
  seen lately, which is where admission keeps the deployment anyway.
- an average is not enough: with Poisson arrivals about half the requests admitted right at the budget would miss
  it. So each TTFT is also compared with the average the request was predicted at admission, and the `quantile`
  (0.9) of the last `error_window` ratios actual / predicted scales every prediction (1.0 until `min_error_samples`
  were seen). Admission then aims at `quantile` of admitted requests meeting their budget, whatever the spread on
  the machine, and the correction also absorbs any bias of the linear model.
- it is shed when the corrected prediction exceeds `share(tier) × SLO` (free 0.5, plus 0.8, enterprise 1.0; a
  request without a tier counts as 1.0), so as the queue grows the lower tiers are shed first. A request with nothing
  ahead of it is never shed: the queue cannot be what makes it late, and admitting it keeps samples coming, so a
  stale pessimistic estimate cannot lock a deployment out.
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
    quantile: float = 0.9  # the share of admitted requests that should meet their tier's budget
    error_window: int = 200  # actual / predicted TTFT ratios kept per deployment
    min_error_samples: int = 20  # ratios needed before they correct the prediction

    def __post_init__(self) -> None:
        if self.ttft_slo_s <= 0:
            raise ValueError("admission: the TTFT SLO must be positive")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError("admission: ewma_alpha must be in (0, 1]")
        if self.rate_window_s <= 0 or self.max_retry_after_s < 1:
            raise ValueError("admission: rate_window_s must be positive and max_retry_after_s at least 1")
        if any(share <= 0 for share in self.tier_shares.values()):
            raise ValueError("admission: tier shares must be positive")
        if not 0 < self.quantile < 1 or self.error_window < 1 or not 1 <= self.min_error_samples <= self.error_window:
            raise ValueError("admission: quantile must be in (0, 1) and 1 <= min_error_samples <= error_window")

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
                   max_retry_after_s=float(raw.get("max_retry_after_s", 30)),
                   quantile=float(raw.get("quantile", 0.9)), error_window=int(raw.get("error_window", 200)),
                   min_error_samples=int(raw.get("min_error_samples", 20)))


@dataclass(frozen=True, slots=True)
class Rejection:
    predicted_ttft_s: float
    budget_s: float
    retry_after_s: float


MIN_DEPTH_VARIANCE = 0.25  # weighted variance of the sampled depths below which no slope is fitted
MIN_SLOPE_SHARE = 0.1  # the slope is at least this share of the per-place cost


@dataclass(slots=True)
class _DepthFit:
    """Exponentially weighted least squares of TTFT (y) against queue depth (x)."""

    samples: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    mean_xx: float = 0.0
    mean_xy: float = 0.0

    def add(self, x: float, y: float, alpha: float) -> None:
        weight = 1.0 if self.samples == 0 else alpha
        self.mean_x += weight * (x - self.mean_x)
        self.mean_y += weight * (y - self.mean_y)
        self.mean_xx += weight * (x * x - self.mean_xx)
        self.mean_xy += weight * (x * y - self.mean_xy)
        self.samples += 1

    def line(self) -> tuple[float, float] | None:
        """(base, slope) in seconds; None before any sample."""
        if self.samples == 0:
            return None
        per_place = self.mean_y / (self.mean_x + 1)
        variance = self.mean_xx - self.mean_x * self.mean_x
        if variance < MIN_DEPTH_VARIANCE:
            return per_place, per_place
        slope = max((self.mean_xy - self.mean_x * self.mean_y) / variance, MIN_SLOPE_SHARE * per_place)
        return max(0.0, self.mean_y - slope * self.mean_x), slope


@dataclass(slots=True)
class _Load:
    fit: _DepthFit = field(default_factory=_DepthFit)  # TTFT against depth
    completions: deque[float] = field(default_factory=deque)  # when requests finished, within the rate window
    errors: deque[float] = field(default_factory=deque)  # actual / predicted TTFT of recent requests


class AdmissionController:
    def __init__(self, policy: AdmissionPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or AdmissionPolicy()
        self.clock = clock
        self._loads: dict[str, _Load] = {}

    def _load(self, deployment: str) -> _Load:
        return self._loads.setdefault(deployment, _Load())

    # -- feedback ----------------------------------------------------------------------------------------------------
    def observe_ttft(self, deployment: str, ttft_s: float, depth: int, predicted_s: float | None = None) -> None:
        """`predicted_s`: the average TTFT predicted for this request when it was admitted (None: no estimate)."""
        if ttft_s < 0 or depth < 0:
            raise ValueError("admission: TTFT and depth must not be negative")
        load = self._load(deployment)
        load.fit.add(depth, ttft_s, self.policy.ewma_alpha)
        if predicted_s is not None and predicted_s > 0:
            load.errors.append(ttft_s / predicted_s)
            if len(load.errors) > self.policy.error_window:
                load.errors.popleft()

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
        """The average TTFT a request joining `in_flight` others would see; None before any TTFT was measured."""
        line = self._load(deployment).fit.line()
        return None if line is None else line[0] + line[1] * in_flight

    def correction(self, deployment: str) -> float:
        """The `quantile` of recent actual / predicted TTFT ratios: what turns the average into that quantile."""
        errors = self._load(deployment).errors
        if len(errors) < self.policy.min_error_samples:
            return 1.0
        ordered = sorted(errors)
        return ordered[min(len(ordered) - 1, math.ceil(self.policy.quantile * len(ordered)) - 1)]

    # -- deciding ----------------------------------------------------------------------------------------------------
    def check(self, deployment: str, in_flight: int, tier: str | None) -> Rejection | None:
        """None to admit; a Rejection (with how long to wait) when the request would miss its tier's budget."""
        predicted = self.predicted_ttft(deployment, in_flight)
        if not self.policy.enabled or in_flight == 0 or predicted is None:
            return None
        correction = self.correction(deployment)
        predicted *= correction
        budget = self.policy.budget_s(tier)
        if predicted <= budget:
            return None
        base, slope = self._load(deployment).fit.line() or (0.0, 0.0)
        admitted_depth = max(0, math.floor((budget / correction - base) / slope)) if slope > 0 else 0
        excess = in_flight - admitted_depth  # requests that must finish before this tier fits again
        rate = self.completion_rate(deployment)
        wait = excess / rate if rate else predicted - budget
        return Rejection(predicted, budget, min(max(wait, 1.0), self.policy.max_retry_after_s))
