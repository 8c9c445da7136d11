"""Admission control: the TTFT prediction, tiered shedding, the max_queue bound, Retry-After, and the off switch —
driven with a fake clock, on its own and through the router."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import ApiError
from services.common.metrics import Metrics, sample_values
from services.orchestrator.admission import AdmissionController, AdmissionPolicy
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.routing import Router, RoutingPolicy

DEP = "small-v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def controller(**policy) -> tuple[AdmissionController, Clock]:
    clock = Clock()
    return AdmissionController(AdmissionPolicy(ttft_slo_s=1.0, **policy), clock=clock), clock


def first_shed_depth(admission: AdmissionController, tier: str | None, deployment: str = DEP) -> int | None:
    return next((n for n in range(200) if admission.check(deployment, n, tier) is not None), None)


def calibrate(admission: AdmissionController, per_place: float, deployment: str = DEP) -> None:
    """Samples on the line `per_place × (ahead + 1)` over a spread of depths: the fit is exactly that line."""
    for _ in range(3):
        for ahead in range(8):
            admission.observe_ttft(deployment, per_place * (ahead + 1), ahead=ahead)


def test_predicted_ttft_grows_with_the_requests_waiting_ahead() -> None:
    admission, _ = controller()
    assert admission.predicted_ttft(DEP, 5) is None  # nothing measured yet
    calibrate(admission, 0.125)
    assert admission.predicted_ttft(DEP, 0) == pytest.approx(0.125)
    assert admission.predicted_ttft(DEP, 7) == pytest.approx(1.0)
    depths = [admission.predicted_ttft(DEP, n) for n in range(10)]
    assert depths == sorted(depths) and depths[0] < depths[-1]


def test_without_a_spread_of_depths_a_request_ahead_costs_a_tenth_of_a_place() -> None:
    """Samples all taken behind the same queue cannot tell the base from the slope. A continuous-batching engine
    prefills several waiting requests per step, so each one ahead is taken to cost a tenth of the average per place,
    not a whole one: charging the full 0.5 s of a lone request's TTFT per place ahead would shed a burst of two."""
    admission, _ = controller()
    admission.observe_ttft(DEP, 0.5, ahead=3)  # 4 places took 0.5 s: 0.125 s a place on average
    assert admission.predicted_ttft(DEP, 3) == pytest.approx(0.5)  # the line passes through what was seen
    assert admission.predicted_ttft(DEP, 4) - admission.predicted_ttft(DEP, 3) == pytest.approx(0.0125)
    assert first_shed_depth(admission, None) == 44  # 0.5 + 0.0125 × (n - 3) > 1 s from n = 44


def test_a_fixed_cost_and_the_cost_of_each_request_ahead_are_told_apart() -> None:
    admission, _ = controller()
    for _ in range(30):
        for depth in (0, 2, 4, 6):
            admission.observe_ttft(DEP, 0.2 + 0.05 * depth, ahead=depth)
    assert admission.predicted_ttft(DEP, 0) == pytest.approx(0.2)
    assert admission.predicted_ttft(DEP, 10) == pytest.approx(0.7)
    # free's 0.5 s fits behind 6 (0.2 + 0.05 × 6); a line through the origin, fitted around depth 3 (0.35 s for 4
    # places), would have shed it behind 5 already, and shed ever earlier the larger the fixed cost
    assert first_shed_depth(admission, "free") == 7
    for _ in range(30):  # the deployment got slower: the fit follows (weight 0.2 for the newest sample)
        for depth in (0, 2, 4, 6):
            admission.observe_ttft(DEP, 0.4 + 0.1 * depth, ahead=depth)
    assert admission.predicted_ttft(DEP, 0) == pytest.approx(0.4, abs=1e-6)
    assert admission.predicted_ttft(DEP, 5) == pytest.approx(0.9, abs=1e-6)


def test_a_fit_that_calls_the_queue_free_is_not_trusted() -> None:
    admission, _ = controller()
    for _ in range(20):
        for depth in (0, 4):
            admission.observe_ttft(DEP, 0.3, ahead=depth)  # noise can hide the queue's cost for a while
    per_place = 0.3 / (2 + 1)  # the average TTFT over one more than the average depth (2)
    assert admission.predicted_ttft(DEP, 10) - admission.predicted_ttft(DEP, 0) == pytest.approx(
        10 * 0.1 * per_place, rel=0.1)  # (the weighted average depth is near 2, not exactly)


def test_lower_tiers_are_shed_first() -> None:
    admission, _ = controller()
    calibrate(admission, 0.125)
    # budgets 0.5 / 0.8 / 1.0 s at 0.125 s a place: free fits behind 3, plus behind 5, enterprise behind 7
    assert first_shed_depth(admission, "free") == 4
    assert first_shed_depth(admission, "plus") == 6
    assert first_shed_depth(admission, "enterprise") == 8
    assert first_shed_depth(admission, None) == 8  # no tier (tenancy off): the whole SLO
    rejection = admission.check(DEP, 4, "free")
    assert rejection.predicted_ttft_s == pytest.approx(0.625) and rejection.budget_s == pytest.approx(0.5)
    assert admission.check(DEP, 4, "plus") is None and admission.check(DEP, 4, "enterprise") is None


def test_nothing_ahead_is_never_shed() -> None:
    """However pessimistic a stale estimate is, an empty deployment admits, so new samples can correct it."""
    admission, _ = controller()
    admission.observe_ttft(DEP, 30.0, ahead=0)
    assert admission.check(DEP, 0, "free") is None
    assert admission.check(DEP, 1, "free") is not None


def test_retry_after_comes_from_the_rate_the_queue_drains() -> None:
    """The queue admission judges by is the requests waiting for their first token: it drains as the engine starts
    them, so Retry-After is the excess over the admitted depth at the measured rate of first tokens."""
    admission, clock = controller()
    calibrate(admission, 0.125)
    clock.now += 60  # those samples' first tokens left the 10 s window
    assert admission.drain_rate(DEP) is None
    for ahead in range(20):  # 20 first tokens in the 10 s window: 2 a second (on the same line)
        admission.observe_ttft(DEP, 0.125 * (ahead % 8 + 1), ahead=ahead % 8)
        clock.now += 0.25
    assert admission.drain_rate(DEP) == pytest.approx(2.0)
    # free is admitted behind at most 3; behind 9, six must start first: 3 s at 2 a second
    assert admission.check(DEP, 9, "free").retry_after_s == pytest.approx(3.0)
    assert admission.check(DEP, 4, "free").retry_after_s == 1.0  # never below one second
    clock.now += 60  # the window emptied, and the estimate went stale with it: nothing is shed on it
    assert admission.drain_rate(DEP) is None and admission.check(DEP, 9, "free") is None


def test_retry_after_without_a_measured_rate_is_the_predicted_excess() -> None:
    admission, clock = controller(rate_window_s=1.0, stale_after_s=100.0)
    calibrate(admission, 0.125)
    clock.now += 2  # no first token in the rate window, but the estimate is still current
    assert admission.drain_rate(DEP) is None
    assert admission.check(DEP, 9, "free").retry_after_s == 1.0  # 0.75 s over budget, floored at 1
    assert admission.check(DEP, 1000, "free").retry_after_s == 30.0  # capped


def test_an_estimate_without_fresh_samples_sheds_nothing() -> None:
    """Right after an overload the fit and its correction still describe it; an engine under load starts requests
    every few milliseconds, so a second without a first token means that load has passed: admit, and learn anew."""
    admission, clock = controller(min_error_samples=10)
    for _ in range(3):
        for ahead in range(8):  # an overload: 0.5 s a place, and every request 3× later than predicted
            admission.observe_ttft(DEP, 0.5 * (ahead + 1), ahead=ahead, predicted_s=0.5 * (ahead + 1) / 3)
    assert admission.correction(DEP) == pytest.approx(3.0)
    assert first_shed_depth(admission, "enterprise") == 1
    clock.now += 0.9
    assert first_shed_depth(admission, "enterprise") == 1  # still current
    clock.now += 0.2  # 1.1 s without a sample: stale
    assert admission.stale(DEP) and first_shed_depth(admission, "enterprise") is None
    admission.observe_ttft(DEP, 0.06, ahead=1, predicted_s=1.0)  # the first request admitted after the overload
    assert admission.correction(DEP) == 1.0  # the overload's ratios went with the quiet spell ...
    assert admission._load(DEP).fit.samples == 1  # ... and so did its fit
    for ahead in (0, 1, 0, 1, 0, 1):  # moderate load: 50-60 ms behind at most one other, over 0.6 s
        clock.now += 0.1
        admission.observe_ttft(DEP, 0.05 + 0.01 * ahead, ahead=ahead, predicted_s=admission.predicted_ttft(DEP, ahead))
    assert admission.check(DEP, 8, "enterprise") is None  # 1.7 s after the overload's last sample
    assert admission.check(DEP, 8, "free") is None


def test_off_means_never_shed() -> None:
    admission, _ = controller(enabled=False)
    admission.observe_ttft(DEP, 10.0, ahead=0)
    assert first_shed_depth(admission, "free") is None


def test_policy_from_catalog_and_validation() -> None:
    policy = AdmissionPolicy.from_dict({"enabled": False, "tier_shares": {"free": 0.3}}, ttft_slo_ms=200)
    assert not policy.enabled and policy.ttft_slo_s == pytest.approx(0.2)
    assert policy.budget_s("free") == pytest.approx(0.06) and policy.budget_s("plus") == pytest.approx(0.16)
    assert AdmissionPolicy.from_dict(None, ttft_slo_ms=500).enabled  # on by default
    routing = RoutingPolicy.from_dict({"admission": {"tier_shares": {"plus": 0.9}}}, slo_ttft_ms=800)
    assert routing.admission.budget_s("plus") == pytest.approx(0.72)
    with pytest.raises(ValueError):
        AdmissionPolicy(tier_shares={"free": 0})
    with pytest.raises(ValueError):
        AdmissionPolicy(ttft_slo_s=0)


# -- through the router --------------------------------------------------------------------------------------------
def deployment(name: str, max_queue: int = 16) -> Deployment:
    return Deployment(name=name, triton_model=f"llm_{name}", checkpoint_dir=Path("/nowhere"), tokenizer=None,
                      context_window=1024, max_queue=max_queue)


@pytest.fixture
def router() -> Router:
    small, large, lonely = deployment("small-v1"), deployment("large-v1"), deployment("lonely-v1", max_queue=4)
    catalog = ModelCatalog([
        ModelEntry("sluice-small", [(small, 100)], fallback="sluice-large"),
        ModelEntry("sluice-large", [(large, 100)]),
        ModelEntry("lonely", [(lonely, 100)]),
    ])
    return Router(catalog, RoutingPolicy(admission=AdmissionPolicy(ttft_slo_s=1.0)), clock=Clock())


def load(router: Router, name: str, in_flight: int, ttft_s: float = 0.125) -> Deployment:
    """`ttft_s` a place ahead, learnt from requests served one after another; then `in_flight` requests admitted
    that wait for their first token."""
    decision = router.route(name, request_id="r", reserve=True)
    assert decision.reservation.ahead == 0  # nothing was ahead of it
    router.finished(decision.reservation, ok=True, ttft_s=ttft_s)
    calibrate(router.admission, ttft_s, decision.deployment.name)
    for _ in range(in_flight):
        router.reserve(decision.deployment)
    return decision.deployment


def test_router_sends_an_overloaded_request_to_a_fallback_with_headroom(router: Router) -> None:
    load(router, "sluice-small", in_flight=4)
    decision = router.route("sluice-small", request_id="r", admission_tier="free")
    assert decision.deployment.name == "large-v1" and decision.fallback_from == "small-v1 (overloaded)"
    assert router.route("sluice-small", request_id="r", admission_tier="enterprise").deployment.name == "small-v1"


def test_router_rejects_at_once_with_retry_after_when_nothing_can_take_it(router: Router) -> None:
    load(router, "lonely", in_flight=1, ttft_s=0.5)  # 0.5 s a place: free (0.5 s) fits only an empty queue
    with pytest.raises(ApiError) as info:
        router.route("lonely", request_id="r", admission_tier="free")
    error = info.value
    assert error.status == 503 and error.code == "overloaded" and error.retry_after >= 1
    assert router.route("lonely", request_id="r", tier="enterprise").deployment.name == "lonely-v1"  # tier decides


def test_max_queue_is_a_hard_bound_for_every_tier_on_or_off(router: Router) -> None:
    target = load(router, "lonely", in_flight=4, ttft_s=0.0)  # predicted TTFT 0: only the bound can refuse
    for tier in ("free", "plus", "enterprise", None):
        with pytest.raises(ApiError) as info:
            router.route("lonely", request_id="r", admission_tier=tier)
        assert info.value.status == 503
    off = Router(router.catalog, RoutingPolicy(admission=AdmissionPolicy(enabled=False)), clock=Clock())
    for _ in range(target.max_queue):
        off.reserve(target)
    with pytest.raises(ApiError):
        off.route("lonely", request_id="r", admission_tier="enterprise")


def test_router_with_admission_off_never_sheds_below_max_queue(router: Router) -> None:
    off = Router(router.catalog, RoutingPolicy(admission=AdmissionPolicy(enabled=False)), clock=Clock())
    target = load(off, "lonely", in_flight=3, ttft_s=30.0)
    assert off.route("lonely", request_id="r", admission_tier="free").deployment is target


def test_an_overloaded_request_is_not_sent_to_a_fallback_its_tier_may_not_use(router: Router) -> None:
    """A free tenant whose tier lists only the small model gets 503 + Retry-After, not a fallback that 403s."""
    load(router, "sluice-small", in_flight=4)
    with pytest.raises(ApiError) as info:
        router.route("sluice-small", request_id="r", admission_tier="free", may_use=lambda m: m == "sluice-small")
    assert info.value.status == 503 and info.value.code == "overloaded"
    assert router.route("sluice-small", request_id="r", admission_tier="free",
                        may_use=lambda m: True).deployment.name == "large-v1"


def test_sheds_are_counted_by_deployment_tier_and_outcome(router: Router) -> None:
    metrics = Metrics(CollectorRegistry())
    counted = Router(router.catalog, router.policy, clock=Clock(), metrics=metrics)
    load(counted, "sluice-small", in_flight=4)
    load(counted, "lonely", in_flight=1, ttft_s=0.5)
    counted.route("sluice-small", request_id="r", admission_tier="free")  # to the fallback
    with pytest.raises(ApiError):
        counted.route("lonely", request_id="r", admission_tier="free")  # nowhere to go
    counted.route("sluice-small", request_id="r", admission_tier="enterprise")  # admitted: not counted
    shed = {(s["deployment"], s["tier"], s["outcome"]): v
            for s, v in sample_values(metrics.registry, "sluice_admission_shed_total")}
    assert shed == {("small-v1", "free", "fallback"): 1.0, ("lonely-v1", "free", "rejected"): 1.0}


def test_a_reservation_is_taken_with_the_decision_and_given_back_once(router: Router) -> None:
    target = load(router, "sluice-small", in_flight=0)
    health = router.health[target.name]
    first = router.route("sluice-small", request_id="a", reserve=True)
    second = router.route("sluice-small", request_id="b", reserve=True)
    assert health.in_flight == 2 and (first.reservation.ahead, second.reservation.ahead) == (0, 1)
    assert router.route("sluice-small", request_id="c").reservation is None and health.in_flight == 2  # a peek
    assert first.reservation.release() and not first.reservation.release()
    router.finished(first.reservation, ok=True, ttft_s=0.1)  # already released: counts the outcome, not the place
    assert health.in_flight == 1
    router.finished(second.reservation, ok=True)
    assert health.in_flight == 0


def test_the_prediction_is_corrected_to_the_quantile_of_its_errors() -> None:
    """Admitting on the average would let about half the requests admitted at the budget miss it: the prediction is
    scaled by the 90th percentile of recent actual / predicted ratios, once there are enough of them."""
    admission, _ = controller(min_error_samples=10, error_window=20)
    calibrate(admission, 0.125)
    assert first_shed_depth(admission, None) == 8 and admission.correction(DEP) == 1.0
    for depth in range(9):  # each took 0.125 s a place (the average holds) but twice what was predicted for it
        admission.observe_ttft(DEP, 0.125 * (depth + 1), ahead=depth, predicted_s=0.0625 * (depth + 1))
    assert admission.correction(DEP) == 1.0  # 9 ratios: not enough yet
    admission.observe_ttft(DEP, 0.125, ahead=0, predicted_s=0.0625)
    assert admission.predicted_ttft(DEP, 3) == pytest.approx(0.5)  # the average itself is unchanged
    assert admission.correction(DEP) == pytest.approx(2.0)
    assert first_shed_depth(admission, None) == 4  # 0.125 × 2 a place: a 1 s budget fits behind 3
    assert admission.check(DEP, 4, None).predicted_ttft_s == pytest.approx(1.25)
    for ratio in range(1, 21):  # the window keeps the last 20: ratios 0.1 .. 2.0, their 90th percentile is 1.8
        admission.observe_ttft(DEP, 0.125, ahead=0, predicted_s=0.125 / (ratio / 10))
    assert admission.correction(DEP) == pytest.approx(1.8)


def test_the_engines_first_token_feeds_admission_and_the_clients_feeds_brownout(router: Router) -> None:
    """Admission control learns what the queue costs: the time from admission to the engine's first token. What the
    output guard adds before the client sees it cannot be won back by shedding, so it only feeds brownout."""
    load(router, "sluice-small", in_flight=0)  # 0.125 s a place
    fit = router.admission._load("small-v1").fit
    samples, mean_y = fit.samples, fit.mean_y
    decision = router.route("sluice-small", request_id="r", reserve=True)
    assert decision.reservation.predicted_s == pytest.approx(0.125)
    health = router.health["small-v1"]
    assert health.waiting == 1
    router.clock.now += 0.25
    decision.reservation.start()  # the engine's first token, 0.25 s after admission
    assert health.waiting == 0 and health.in_flight == 1
    assert fit.samples == samples + 1 and fit.mean_y == pytest.approx(0.8 * mean_y + 0.2 * 0.25)
    assert [ratio for _, ratio in router.admission._load("small-v1").errors] == [pytest.approx(2.0)]
    decision.reservation.first_token(3.0)  # the client saw it after 3 s (the output guard held it)
    router.finished(decision.reservation, ok=True, ttft_s=0.1)  # the generator's own, later measure: ignored
    assert fit.samples == samples + 1
    assert [ttft for _, ttft in health.ttfts][-1] == 3.0  # brownout judges what the client saw
    assert health.in_flight == 0 and health.waiting == 0


def test_a_request_that_ends_without_a_first_token_stops_waiting_once(router: Router) -> None:
    target = load(router, "sluice-small", in_flight=0)
    health = router.health[target.name]
    first = router.route("sluice-small", request_id="a", reserve=True)
    second = router.route("sluice-small", request_id="b", reserve=True)
    assert (health.in_flight, health.waiting) == (2, 2)
    assert first.reservation.release() and not first.reservation.release()
    first.reservation.start()  # too late: it already ended; nothing is learnt and nothing counted twice
    assert (health.in_flight, health.waiting) == (1, 1)
    second.reservation.start()
    second.reservation.start()
    assert (health.in_flight, health.waiting) == (1, 0)
    router.finished(second.reservation, ok=True)
    assert (health.in_flight, health.waiting) == (0, 0)
