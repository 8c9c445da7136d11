"""Model routing: which deployment serves a request, and what happens when it cannot.

- explicit model names and aliases resolve through the catalog; `auto` picks a model by prompt length, requested
  `max_tokens` and tenant tier; tenants may be pinned to a model;
- a model with several deployments splits traffic by canary weight (deterministic per request id);
- a deployment whose circuit is open or whose in-flight count is past its `max_queue` sends new requests to the
  model's declared fallback, and says so;
- brownout: when a deployment's time to first token stays above its SLO for a sustained window, new requests get
  their `max_tokens` capped until it recovers;
- admission control (admission.py): a request whose predicted TTFT would miss its tier's share of the SLO goes to the
  fallback if that has headroom, else is rejected at once (503 `overloaded` with `Retry-After`); each shed request is
  counted in `sluice_admission_shed_total`.

A request counts against its deployment's in-flight number, and as waiting for its first token, from the moment it
is admitted: `route(reserve=True)` takes a `Reservation` in the same synchronous call as the check, so a burst
arriving together on the event loop sees every earlier admission, not only the requests whose streams already
started. It stops waiting at the engine's first token (`Reservation.start()`, which also reports the TTFT to
admission control). The reservation is released exactly once, by `finished()` when generation ends or by
`Reservation.release()` when the request never gets that far.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from services.common.circuit_breaker import CircuitBreaker
from services.common.errors import ApiError, unavailable
from services.common.metrics import METRICS, Metrics
from services.common.settings import Settings
from services.orchestrator.admission import AdmissionController, AdmissionPolicy
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    auto_small: str | None = None  # the model `auto` picks for short, cheap requests
    auto_large: str | None = None  # ... and for long prompts, long answers or large-tier tenants
    auto_long_prompt_chars: int = 2000
    auto_large_max_tokens: int = 512
    auto_large_tiers: tuple[str, ...] = ("enterprise",)
    tenant_pins: dict[str, str] = field(default_factory=dict)  # tenant → model
    ttft_slo_s: float = 0.5
    brownout_window_s: float = 30.0
    brownout_min_samples: int = 10
    brownout_max_tokens: int = 64
    breaker_failures: int = 3
    breaker_cool_down_s: float = 10.0
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, *, slo_ttft_ms: float | None = None) -> RoutingPolicy:
        """`slo_ttft_ms` (the service's TTFT SLO) is what admission judges by; brownout keeps its own threshold."""
        raw = dict(raw or {})
        auto = raw.pop("auto", {}) or {}
        brownout = raw.pop("brownout", {}) or {}
        admission = AdmissionPolicy.from_dict(raw.pop("admission", None), ttft_slo_ms=slo_ttft_ms or 500.0)
        return cls(
            auto_small=auto.get("small"), auto_large=auto.get("large"),
            auto_long_prompt_chars=int(auto.get("long_prompt_chars", 2000)),
            auto_large_max_tokens=int(auto.get("large_max_tokens", 512)),
            auto_large_tiers=tuple(auto.get("large_tiers", ("enterprise",))),
            tenant_pins=dict(raw.get("tenant_pins") or {}),
            ttft_slo_s=float(brownout.get("ttft_slo_ms", 500)) / 1000,
            brownout_window_s=float(brownout.get("window_s", 30)),
            brownout_min_samples=int(brownout.get("min_samples", 10)),
            brownout_max_tokens=int(brownout.get("max_tokens", 64)),
            breaker_failures=int(raw.get("breaker_failures", 3)),
            breaker_cool_down_s=float(raw.get("breaker_cool_down_s", 10)), admission=admission)


@dataclass
class DeploymentHealth:
    breaker: CircuitBreaker
    in_flight: int = 0  # admitted and not yet ended (`max_queue` bounds this)
    waiting: int = 0  # of those, the ones without a first token from the engine yet (admission control judges by this)
    ttfts: deque[tuple[float, float]] = field(default_factory=deque)  # (when, seconds)

    def brownout(self, policy: RoutingPolicy, now: float) -> bool:
        while self.ttfts and self.ttfts[0][0] < now - policy.brownout_window_s:
            self.ttfts.popleft()
        if len(self.ttfts) < policy.brownout_min_samples:
            return False
        return all(ttft > policy.ttft_slo_s for _, ttft in self.ttfts)


@dataclass(eq=False, slots=True)
class Reservation:
    """One admitted request's place in its deployment's in-flight count, and how its TTFT is reported back."""

    deployment: Deployment
    ahead: int  # requests on the deployment waiting for their first token when this one was admitted
    health: DeploymentHealth
    predicted_s: float | None  # the average TTFT admission control predicted for it (None: no estimate yet)
    admitted_at: float  # the router's clock when it was admitted
    on_start: Callable[[Reservation, float | None], None]
    on_first_token: Callable[[Reservation, float | None], None]
    released: bool = False
    waiting: bool = True  # no first token from the engine yet
    ttft_reported: bool = False

    def start(self, ttft_s: float | None = None) -> None:
        """The engine produced the request's first token (once; later calls are ignored): it leaves the waiting
        queue, and admission control learns its TTFT, by default the time from its admission to now. That is what
        the queue and the engine cost it: neither the output guard nor anything before admission (auth, input
        guard, retrieval), which shedding cannot win back."""
        if self.waiting:
            self._stop_waiting()
            self.on_start(self, ttft_s)

    def first_token(self, ttft_s: float | None = None) -> None:
        """Reports the TTFT the client saw (once; later reports are ignored) to brownout: by default the time from
        its admission to now. The delivery layer reports as the first token goes out to the client (observe.py);
        the generator's own measure at the end of the stream only counts where nothing reported earlier."""
        if not self.ttft_reported:
            self.ttft_reported = True
            self.on_first_token(self, ttft_s)

    def release(self) -> bool:
        """Gives the place back; True the first time, False (and nothing changes) after that."""
        if self.released:
            return False
        self.released = True
        self.health.in_flight = max(0, self.health.in_flight - 1)
        if self.waiting:  # ended without a first token: it no longer waits, and there is no TTFT to learn
            self._stop_waiting()
        return True

    def _stop_waiting(self) -> None:
        self.waiting = False
        self.health.waiting = max(0, self.health.waiting - 1)


@dataclass(slots=True)
class RouteDecision:
    entry: ModelEntry  # the public model actually serving (the fallback's, after a fallback)
    deployment: Deployment
    reason: str  # how the model was chosen: explicit, alias, auto:<why>, pinned, canary
    fallback_from: str | None = None  # the deployment that could not take the request, and why
    max_tokens_cap: int | None = None  # set while the deployment is browned out
    reservation: Reservation | None = None  # the request's place in the deployment's in-flight count, if taken

    def headers(self) -> dict[str, str]:
        headers = {"x-sluice-model": self.entry.name, "x-sluice-deployment": self.deployment.name,
                   "x-sluice-route": self.reason}
        if self.fallback_from:
            headers["x-sluice-fallback"] = self.fallback_from
        if self.max_tokens_cap is not None:
            headers["x-sluice-brownout"] = f"max_tokens={self.max_tokens_cap}"
        return headers


class Router:
    def __init__(self, catalog: ModelCatalog, policy: RoutingPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic, metrics: Metrics = METRICS) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.policy = policy or RoutingPolicy()
        self.clock = clock
        self.health = {d.name: DeploymentHealth(CircuitBreaker(failure_threshold=self.policy.breaker_failures,
                                                               cool_down_s=self.policy.breaker_cool_down_s,
                                                               clock=clock))
                       for d in catalog.deployments()}
        self.admission = AdmissionController(self.policy.admission, clock)

    # -- choosing ----------------------------------------------------------------------------------------------------
    def _pick_model(self, requested: str, tenant: str | None, tier: str | None, prompt_chars: int,
                    max_tokens: int | None) -> tuple[ModelEntry, str]:
        if tenant and tenant in self.policy.tenant_pins:
            return self.catalog.get(self.policy.tenant_pins[tenant]), "pinned"
        if requested != AUTO:
            entry = self.catalog.get(requested)
            return entry, "explicit" if entry.name == requested else "alias"
        small, large = self.policy.auto_small, self.policy.auto_large
        if not small or not large:
            raise ApiError(404, "The model `auto` is not configured on this deployment.", "invalid_request_error",
                           "model", "model_not_found")
        if tier in self.policy.auto_large_tiers:
            return self.catalog.get(large), "auto:tier"
        if prompt_chars > self.policy.auto_long_prompt_chars:
            return self.catalog.get(large), "auto:long-prompt"
        if (max_tokens or 0) > self.policy.auto_large_max_tokens:
            return self.catalog.get(large), "auto:long-answer"
        return self.catalog.get(small), "auto:short"

    def choose_model(self, requested: str, *, tenant: str | None = None, tier: str | None = None,
                     prompt_chars: int = 0, max_tokens: int | None = None) -> ModelEntry:
        """The model `route` would pick first, with no admission check (the request's tokens are counted on it)."""
        return self._pick_model(requested, tenant, tier, prompt_chars, max_tokens)[0]

    def _pick_deployment(self, entry: ModelEntry, request_id: str) -> tuple[Deployment, bool]:
        if len(entry.targets) == 1:
            return entry.targets[0][0], False
        total = sum(weight for _, weight in entry.targets)
        point = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big") % total
        for deployment, weight in entry.targets:
            if point < weight:
                return deployment, deployment is not entry.primary
            point -= weight
        return entry.primary, False

    def _unavailable_reason(self, deployment: Deployment, tier: str | None = None) -> str | None:
        health = self.health[deployment.name]
        if not health.breaker.allow():
            return "circuit-open"
        if health.in_flight >= deployment.max_queue:
            return "queue-full"
        if self.admission.check(deployment.name, health.waiting, tier) is not None:
            return "overloaded"
        return None

    def route(self, requested: str, *, request_id: str, tenant: str | None = None, tier: str | None = None,
              prompt_chars: int = 0, max_tokens: int | None = None,
              admission_tier: str | None = None, may_use: Callable[[str], bool] | None = None,
              reserve: bool = False) -> RouteDecision:
        """`admission_tier` is the tier admission control sheds by (default `tier`, which also steers `auto`);
        `may_use(model)` says whether the caller may be sent to a fallback model (its tier's model list).
        `reserve` counts the request in flight on the chosen deployment at once (see `Reservation`): the caller
        must then end it with `finished()` or `decision.reservation.release()`."""
        admission_tier = admission_tier if admission_tier is not None else tier
        entry, reason = self._pick_model(requested, tenant, tier, prompt_chars, max_tokens)
        deployment, canary = self._pick_deployment(entry, request_id)
        if canary:
            reason = "canary"
        seen = {entry.name}
        fallback_from = None
        while (why := self._unavailable_reason(deployment, admission_tier)) is not None:
            fallback_from = f"{deployment.name} ({why})" if fallback_from is None else fallback_from
            if (entry.fallback is None or entry.fallback in seen
                    or (may_use is not None and not may_use(self.catalog.get(entry.fallback).name))):
                self._count_shed(deployment, why, admission_tier, "rejected")
                raise self._rejection(entry, deployment, why, admission_tier)
            self._count_shed(deployment, why, admission_tier, "fallback")
            entry = self.catalog.get(entry.fallback)
            seen.add(entry.name)
            deployment, _ = self._pick_deployment(entry, request_id)
        cap = self.policy.brownout_max_tokens if self.health[deployment.name].brownout(self.policy,
                                                                                       self.clock()) else None
        return RouteDecision(entry, deployment, reason, fallback_from, cap,
                             self.reserve(deployment) if reserve else None)

    def _count_shed(self, deployment: Deployment, why: str, tier: str | None, outcome: str) -> None:
        if why == "overloaded":  # only admission control's own decisions; a full queue or open circuit is not a shed
            self.metrics.admission_shed.labels(deployment.name, tier or "none", outcome).inc()

    def _rejection(self, entry: ModelEntry, deployment: Deployment, why: str, tier: str | None) -> ApiError:
        if why == "overloaded":
            rejection = self.admission.check(deployment.name, self.health[deployment.name].waiting, tier)
            retry = rejection.retry_after_s if rejection else 1.0
            return unavailable(f"The model `{entry.name}` is overloaded; retry after the suggested delay.",
                               retry_after=retry, code="overloaded")
        retry = self.health[deployment.name].breaker.retry_after() if why == "circuit-open" else 1.0
        return unavailable(f"The model `{entry.name}` is temporarily unavailable ({why}).",
                           retry_after=max(retry, 1.0))

    def fallback_after_failure(self, decision: RouteDecision, request_id: str) -> RouteDecision | None:
        """After `decision`'s deployment failed before producing anything: the fallback route, if there is one,
        holding a reservation on the fallback's deployment."""
        entry = decision.entry
        if entry.fallback is None:
            return None
        fallback = self.catalog.get(entry.fallback)
        deployment, _ = self._pick_deployment(fallback, request_id)
        if self._unavailable_reason(deployment) is not None:
            return None
        return RouteDecision(fallback, deployment, decision.reason, f"{decision.deployment.name} (failed)",
                             reservation=self.reserve(deployment))

    # -- feedback ----------------------------------------------------------------------------------------------------
    def reserve(self, deployment: Deployment) -> Reservation:
        """Counts a request in flight on `deployment` without an admission check (route(reserve=True) checks)."""
        health = self.health[deployment.name]
        ahead = health.waiting
        health.in_flight += 1
        health.waiting += 1
        return Reservation(deployment, ahead, health, self.admission.predicted_ttft(deployment.name, ahead),
                           self.clock(), self._started, self._first_token)

    def _started(self, reservation: Reservation, ttft_s: float | None) -> None:
        ttft_s = max(0.0, self.clock() - reservation.admitted_at) if ttft_s is None else ttft_s
        self.admission.observe_ttft(reservation.deployment.name, ttft_s, reservation.ahead, reservation.predicted_s)

    def _first_token(self, reservation: Reservation, ttft_s: float | None) -> None:
        now = self.clock()
        ttft_s = max(0.0, now - reservation.admitted_at) if ttft_s is None else ttft_s
        reservation.health.ttfts.append((now, ttft_s))

    def finished(self, reservation: Reservation, *, ok: bool, ttft_s: float | None = None) -> None:
        """A request that reached its deployment ended: its place is given back (if it still holds it) and the
        outcome feeds the circuit breaker, brownout and admission control. `ttft_s` (the generator's own measure)
        counts only where nothing reported the first token earlier."""
        if ttft_s is not None:
            reservation.start(ttft_s)
        reservation.release()
        health = reservation.health
        if ok:
            health.breaker.record_success()
        else:
            health.breaker.record_failure()
        if ttft_s is not None:
            reservation.first_token(ttft_s)


def load_routing_policy(settings: Settings) -> RoutingPolicy:
    """The `routing:` section of the catalog file (defaults when there is none)."""
    if not settings.catalog_path.exists():
        return RoutingPolicy(admission=AdmissionPolicy(ttft_slo_s=settings.slo_ttft_ms / 1000))
    raw = yaml.safe_load(settings.catalog_path.read_text()) or {}
    return RoutingPolicy.from_dict(raw.get("routing"), slo_ttft_ms=settings.slo_ttft_ms)
