"""Routing: explicit names and aliases, auto, pinning, canary weights, fallback on open circuits and full queues,
and brownout caps — driven with a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ApiError
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.routing import Router, RoutingPolicy


def deployment(name: str, max_queue: int = 4) -> Deployment:
    return Deployment(name=name, triton_model=f"llm_{name}", checkpoint_dir=Path("/nowhere"), tokenizer=None,
                      context_window=1024, max_queue=max_queue)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup():
    small, large, large_next = deployment("small-v1"), deployment("large-v1"), deployment("large-v2")
    catalog = ModelCatalog([
        ModelEntry("sluice-small", [(small, 100)], aliases=["tiny"], fallback="sluice-large"),
        ModelEntry("sluice-large", [(large, 90), (large_next, 10)], fallback="sluice-small"),
        ModelEntry("lonely", [(deployment("lonely-v1"), 100)]),
    ])
    clock = Clock()
    policy = RoutingPolicy(auto_small="sluice-small", auto_large="sluice-large", auto_long_prompt_chars=100,
                           auto_large_max_tokens=200, tenant_pins={"acme": "sluice-large"}, breaker_failures=2,
                           breaker_cool_down_s=5, brownout_min_samples=3, brownout_window_s=10,
                           brownout_max_tokens=32)
    return Router(catalog, policy, clock=clock), clock


def test_explicit_alias_and_unknown(setup) -> None:
    router, _ = setup
    assert router.route("sluice-small", request_id="r").deployment.name == "small-v1"
    decision = router.route("tiny", request_id="r")
    assert decision.entry.name == "sluice-small" and decision.reason == "alias"
    with pytest.raises(ApiError) as info:
        router.route("nope", request_id="r")
    assert info.value.status == 404


def test_auto_picks_by_length_answer_and_tier(setup) -> None:
    router, _ = setup
    assert router.route("auto", request_id="r", prompt_chars=20).reason == "auto:short"
    assert router.route("auto", request_id="r", prompt_chars=20).entry.name == "sluice-small"
    assert router.route("auto", request_id="r", prompt_chars=500).reason == "auto:long-prompt"
    assert router.route("auto", request_id="r", max_tokens=300).entry.name == "sluice-large"
    assert router.route("auto", request_id="r", tier="enterprise").reason == "auto:tier"


def test_tenant_pinning_overrides_the_requested_model(setup) -> None:
    router, _ = setup
    decision = router.route("sluice-small", request_id="r", tenant="acme")
    assert decision.entry.name == "sluice-large" and decision.reason == "pinned"


def test_canary_weights_split_traffic_deterministically(setup) -> None:
    router, _ = setup
    picks = [router.route("sluice-large", request_id=f"req-{i}").deployment.name for i in range(2000)]
    share = picks.count("large-v2") / len(picks)
    assert 0.07 < share < 0.13
    assert [router.route("sluice-large", request_id=f"req-{i}").deployment.name for i in range(50)] == picks[:50]
    canary = next(i for i, name in enumerate(picks) if name == "large-v2")
    assert router.route("sluice-large", request_id=f"req-{canary}").reason == "canary"


def test_open_circuit_falls_back_and_recovers(setup) -> None:
    router, clock = setup
    small = router.route("sluice-small", request_id="r").deployment
    for _ in range(2):
        router.finished(router.reserve(small), ok=False)
    decision = router.route("sluice-small", request_id="r")
    assert decision.entry.name == "sluice-large"
    assert decision.fallback_from == "small-v1 (circuit-open)"
    assert decision.headers()["x-sluice-fallback"] == "small-v1 (circuit-open)"
    clock.now += 6  # cool-down over: one trial call goes to the primary again
    assert router.route("sluice-small", request_id="r").deployment.name == "small-v1"
    router.finished(router.reserve(small), ok=True)
    assert router.route("sluice-small", request_id="r").fallback_from is None


def test_full_queue_falls_back_and_no_fallback_is_503(setup) -> None:
    router, _ = setup
    lonely = router.route("lonely", request_id="r").deployment
    small = router.route("sluice-small", request_id="r").deployment
    for _ in range(4):
        router.reserve(small)
        router.reserve(lonely)
    assert router.route("sluice-small", request_id="r").fallback_from == "small-v1 (queue-full)"
    with pytest.raises(ApiError) as info:
        router.route("lonely", request_id="r")
    assert info.value.status == 503 and info.value.retry_after >= 1


def test_brownout_caps_max_tokens_while_ttft_is_over_slo(setup) -> None:
    router, clock = setup
    small = router.route("sluice-small", request_id="r").deployment
    for _ in range(3):
        router.finished(router.reserve(small), ok=True, ttft_s=0.9)
    decision = router.route("sluice-small", request_id="r")
    assert decision.max_tokens_cap == 32 and decision.headers()["x-sluice-brownout"] == "max_tokens=32"
    router.finished(router.reserve(small), ok=True, ttft_s=0.1)  # one fast answer: not sustained any more
    assert router.route("sluice-small", request_id="r").max_tokens_cap is None
    clock.now += 11  # the window passed; too few samples to judge
    assert router.route("sluice-small", request_id="r").max_tokens_cap is None


def test_failure_before_first_token_offers_the_fallback(setup) -> None:
    router, _ = setup
    decision = router.route("sluice-small", request_id="r")
    fallback = router.fallback_after_failure(decision, "r")
    assert fallback is not None and fallback.entry.name == "sluice-large"
    assert router.fallback_after_failure(router.route("lonely", request_id="r"), "r") is None
