"""Admission control: shed a request at once when the time to first token it would see misses its tier's share of
the TTFT SLO, instead of letting it wait and miss it anyway — and shed nothing else.

What makes a request late on a continuous-batching engine is the prefill work queued ahead of it, not the number of
requests in flight: a request that is already decoding joins every step and costs the newcomer only a slightly
longer step. So the model, per deployment, predicts from the queue the engine actually has:

- `ahead`: the requests admitted to the deployment that have not had their first token from the engine yet (the
  router counts them; a request leaves the count at its first token, or when it ends without one). Each admitted
  request reports its TTFT from its admission to the engine's first token (what the queue and the engine add —
  not the output guard, nor anything before admission: shedding cannot win those back) and the `ahead` it was
  admitted behind.
- TTFT is modelled as a line in `ahead`, `base + slope × ahead`, fitted by exponentially weighted least squares
  (weight `ewma_alpha` for the newest sample) so it follows changes in load and speed. The base is what a request
  pays with nothing queued (a step of the running batch, its own prefill); the slope is what each waiting request
  ahead adds (its prefill). The slope is never taken below a tenth of the average per place, as a request ahead is
  never free; while the samples span too few depths to fit a slope, that tenth is the assumption (a batching engine
  prefills several waiting requests per step) rather than a whole base per place, which would shed a modest burst.
- an average is not enough: with Poisson arrivals about half the requests admitted right at the budget would miss
  it. So each TTFT is also compared with the average the request was predicted at admission, and the `quantile`
  (0.9) of the ratios actual / predicted of the last `error_window_s` seconds (at most `error_window` of them)
  scales every prediction (1.0 with fewer than `min_error_samples`). Ratios age out by time, and all go after a
  quiet spell (below), so a correction learnt in an overload does not outlive it.
- estimates age with time, not only with samples: an engine under load starts requests every few milliseconds, so
  an estimate with no sample for `stale_after_s` (1 s) describes a load that has passed. It sheds nothing (the
  requests it admits re-probe the engine), and the next sample starts the fit and the ratios anew — a fit
  weighted by samples alone would keep an overload's slope through any number of samples taken at shallow depths.
- it is shed when the corrected prediction exceeds `share(tier) × SLO` (free 0.5, plus 0.8, enterprise 1.0; a
  request without a tier counts as 1.0), so as the queue grows the lower tiers are shed first. A request with
  nothing waiting ahead of it is never shed: the queue cannot be what makes it late, and admitting it keeps samples
  coming. As `ahead` is the live queue, admission reopens as soon as the engine has worked through it after an
  overload (about one budget's worth of prefill), whatever the fit learnt meanwhile.
- `Retry-After` is the time for the queue to drain to the deepest `ahead` this tier is admitted at, from the rate
  the engine has been starting requests (first tokens in the last `rate_window_s`); with none measured, the
  predicted excess over the budget. Clamped to [1, `max_retry_after_s`] seconds.

The hard bound, `max_queue` requests in flight per deployment, is the router's own check and holds for every tier,
on or off.
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
    rate_window_s: float = 10.0  # first tokens per second are counted over this window
    max_retry_after_s: float = 30.0
    quantile: float = 0.9  # the share of admitted requests that should meet their budget
    error_window: int = 200  # at most this many actual / predicted TTFT ratios kept per deployment ...
    error_window_s: float = 3.0  # ... and none older than this
    min_error_samples: int = 10  # ratios needed before they correct the prediction
    stale_after_s: float = 1.0  # an estimate with no newer sample sheds nothing, and the next sample starts anew

    def __post_init__(self) -> None:
        if self.ttft_slo_s <= 0:
            raise ValueError("admission: the TTFT SLO must be positive")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError("admission: ewma_alpha must be in (0, 1]")
        if min(self.rate_window_s, self.error_window_s, self.stale_after_s) <= 0 or self.max_retry_after_s < 1:
            raise ValueError("admission: rate_window_s, error_window_s and stale_after_s must be positive, "
                             "max_retry_after_s at least 1")
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
                   error_window_s=float(raw.get("error_window_s", 3)),
                   min_error_samples=int(raw.get("min_error_samples", 10)),
                   stale_after_s=float(raw.get("stale_after_s", 1)))


@dataclass(frozen=True, slots=True)
class Rejection:
    predicted_ttft_s: float
    budget_s: float
    retry_after_s: float


MIN_DEPTH_VARIANCE = 0.25  # weighted variance of the sampled depths below which no slope is fitted
MIN_SLOPE_SHARE = 0.1  # the slope is at least this share of the per-place cost


@dataclass(slots=True)
class _DepthFit:
    """Exponentially weighted least squares of TTFT (y) against the requests waiting ahead (x)."""

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
        """(base, slope) in seconds, through the weighted means; None before any sample."""
        if self.samples == 0:
            return None
        floor = MIN_SLOPE_SHARE * self.mean_y / (self.mean_x + 1)
        variance = self.mean_xx - self.mean_x * self.mean_x
        slope = floor if variance < MIN_DEPTH_VARIANCE else max(
            (self.mean_xy - self.mean_x * self.mean_y) / variance, floor)
        return max(0.0, self.mean_y - slope * self.mean_x), slope


@dataclass(slots=True)
class _Load:
    fit: _DepthFit = field(default_factory=_DepthFit)  # TTFT against the requests waiting ahead
    starts: deque[float] = field(default_factory=deque)  # when requests got their first token, within the rate window
    last_sample_at: float | None = None
    errors: deque[tuple[float, float]] = field(default_factory=deque)  # (when, actual / predicted TTFT)


class AdmissionController:
    def __init__(self, policy: AdmissionPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or AdmissionPolicy()
        self.clock = clock
        self._loads: dict[str, _Load] = {}

    def _load(self, deployment: str) -> _Load:
        return self._loads.setdefault(deployment, _Load())

    # -- feedback ----------------------------------------------------------------------------------------------------
    def observe_ttft(self, deployment: str, ttft_s: float, ahead: int, predicted_s: float | None = None) -> None:
        """A request admitted behind `ahead` waiting requests got its first token from the engine after `ttft_s`.
        `predicted_s`: the average TTFT predicted for it when it was admitted (None: no estimate then)."""
        if ttft_s < 0 or ahead < 0:
            raise ValueError("admission: TTFT and the requests ahead must not be negative")
        load, now = self._load(deployment), self.clock()
        if self.stale(deployment):  # after a quiet spell what was learnt describes another load: start anew
            load.fit = _DepthFit()
            load.errors.clear()
        load.fit.add(ahead, ttft_s, self.policy.ewma_alpha)
        load.last_sample_at = now
        load.starts.append(now)
        if predicted_s is not None and predicted_s > 0:
            load.errors.append((now, ttft_s / predicted_s))
            if len(load.errors) > self.policy.error_window:
                load.errors.popleft()

    def stale(self, deployment: str) -> bool:
        """No TTFT sample for `stale_after_s`: while an engine under load starts requests every few milliseconds,
        such an estimate describes a load that has passed."""
        last = self._load(deployment).last_sample_at
        return last is None or self.clock() - last > self.policy.stale_after_s

    # -- estimates ---------------------------------------------------------------------------------------------------
    def drain_rate(self, deployment: str) -> float | None:
        """Requests per second the engine took out of the waiting queue (first tokens) over the last
        `rate_window_s`; None when there were none."""
        load, now = self._load(deployment), self.clock()
        while load.starts and load.starts[0] < now - self.policy.rate_window_s:
            load.starts.popleft()
        return len(load.starts) / self.policy.rate_window_s if load.starts else None

    def predicted_ttft(self, deployment: str, ahead: int) -> float | None:
        """The average TTFT a request admitted behind `ahead` waiting ones would see; None before any sample."""
        line = self._load(deployment).fit.line()
        return None if line is None else line[0] + line[1] * ahead

    def correction(self, deployment: str) -> float:
        """The `quantile` of recent actual / predicted TTFT ratios: what turns the average into that quantile."""
        errors, now = self._load(deployment).errors, self.clock()
        while errors and errors[0][0] < now - self.policy.error_window_s:
            errors.popleft()
        if len(errors) < self.policy.min_error_samples:
            return 1.0
        ordered = sorted(ratio for _, ratio in errors)
        return ordered[min(len(ordered) - 1, math.ceil(self.policy.quantile * len(ordered)) - 1)]

    # -- deciding ----------------------------------------------------------------------------------------------------
    def check(self, deployment: str, ahead: int, tier: str | None) -> Rejection | None:
        """None to admit a request that would join `ahead` requests waiting for their first token; a Rejection
        (with how long to wait) when it would miss its tier's budget."""
        predicted = self.predicted_ttft(deployment, ahead)
        if not self.policy.enabled or ahead == 0 or predicted is None or self.stale(deployment):
            return None
        correction = self.correction(deployment)
        predicted *= correction
        budget = self.policy.budget_s(tier)
        if predicted <= budget:
            return None
        base, slope = self._load(deployment).fit.line() or (0.0, 0.0)
        admitted_ahead = max(0, math.floor((budget / correction - base) / slope)) if slope > 0 else 0
        excess = ahead - admitted_ahead  # requests that must start before this tier fits again
        rate = self.drain_rate(deployment)
        wait = excess / rate if rate else predicted - budget
        return Rejection(predicted, budget, min(max(wait, 1.0), self.policy.max_retry_after_s))
