"""LLM request metrics: TTFT / TPOT / inter-token latency from token arrival times, goodput against the SLOs,
request and token counters, status mapping and the rate-limit counter."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.common import metrics as metrics_module
from services.common.metrics import (
    LLMRequest,
    Metrics,
    record_rate_limited,
    sample_values,
    status_of_grpc,
    status_of_http,
)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(v for found, v in sample_values(registry, name) if all(found.get(k) == x for k, x in labels.items()))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def streamed(ttft: float, gaps: list[tuple[float, int]], start: float = 10.0) -> LLMRequest:
    """A request that started at `start`, got its first token `ttft` later, then chunks after `gaps`."""
    request = LLMRequest(started=start, model="m", tenant="t")
    now = start + ttft
    request.tokens_arrived(1, now)
    for gap, count in gaps:
        now += gap
        request.tokens_arrived(count, now)
    return request


def test_ttft_and_tpot_come_from_token_arrivals() -> None:
    request = streamed(0.2, [(0.02, 1), (0.06, 3)])  # 5 tokens: 0.08 s after the first
    assert request.ttft_s == pytest.approx(0.2)
    assert request.tpot_s == pytest.approx(0.08 / 4)
    assert request.output_tokens == 5
    assert streamed(0.1, []).tpot_s is None  # one token: no time per output token


def test_a_finished_request_moves_every_series_once(metrics: Metrics) -> None:
    request = streamed(0.2, [(0.02, 1), (0.06, 3)])
    request.prompt_tokens, request.cached_prompt_tokens, request.finish_reason = 12, 4, "stop"
    request.cache_result = "miss"
    request.record("ok", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics, now=11.0)
    r = metrics.registry
    assert value(r, "sluice_requests_total", model="m", tenant="t", status="ok") == 1
    assert value(r, "sluice_request_duration_seconds_sum", model="m") == pytest.approx(1.0)
    assert value(r, "sluice_ttft_seconds_count", model="m") == 1
    assert value(r, "sluice_tpot_seconds_count", model="m") == 1
    assert value(r, "sluice_inter_token_latency_seconds_count", model="m") == 4  # 3 coalesced tokens count 3 gaps
    assert value(r, "sluice_inter_token_latency_seconds_sum", model="m") == pytest.approx(0.08)
    assert value(r, "sluice_tokens_total", kind="completion") == 5
    assert value(r, "sluice_tokens_total", kind="prompt") == 12
    assert value(r, "sluice_tokens_total", kind="cached_prompt") == 4
    assert value(r, "sluice_finish_reasons_total", reason="stop") == 1
    assert value(r, "sluice_response_cache_lookups_total", result="miss") == 1
    assert value(r, "sluice_slo_requests_total") == value(r, "sluice_slo_good_requests_total") == 1
    assert value(r, "sluice_goodput_ratio", model="m") == 1.0


def test_goodput_counts_requests_that_meet_both_slos(metrics: Metrics) -> None:
    cases = [streamed(0.1, [(0.01, 1)] * 5),   # good
             streamed(0.7, [(0.01, 1)] * 5),   # TTFT over 500 ms
             streamed(0.1, [(0.09, 1)] * 5),   # TPOT over 50 ms
             streamed(0.1, [])]                # one token, fast: good
    for request in cases:
        request.record("ok", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics)
    failed = streamed(0.1, [])
    failed.record("error", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics)  # a server failure is judged, bad
    LLMRequest(model="m").record("client_error", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics)  # not judged
    LLMRequest(model="m").record("cancelled", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics)  # not judged
    r = metrics.registry
    assert value(r, "sluice_slo_requests_total", model="m") == 5
    assert value(r, "sluice_slo_good_requests_total", model="m") == 2
    assert value(r, "sluice_goodput_ratio", model="m") == pytest.approx(2 / 5)
    assert value(r, "sluice_requests_total", model="m") == 7


def test_a_failure_after_the_answer_started_is_an_error(metrics: Metrics) -> None:
    request = streamed(0.1, [(0.01, 1)])
    request.failed = True
    request.record("ok", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics)
    assert value(metrics.registry, "sluice_requests_total", status="error") == 1
    assert value(metrics.registry, "sluice_slo_good_requests_total") == 0


def test_goodput_forgets_requests_older_than_its_window() -> None:
    now = [0.0]
    metrics = Metrics(CollectorRegistry())
    metrics.goodput.clock = lambda: now[0]
    metrics.goodput.add("m", False)
    now[0] = 200.0
    metrics.goodput.add("m", True)
    assert metrics.goodput.ratio("m") == 0.5
    now[0] = 400.0  # the first one is now more than 5 minutes old
    assert metrics.goodput.ratio("m") == 1.0
    assert metrics.goodput.ratio("unknown") is None


def test_unknown_status_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="status"):
        LLMRequest().record("fine", slo_ttft_s=0.5, slo_tpot_s=0.05, metrics=metrics)


@pytest.mark.parametrize(("code", "status"), [(200, "ok"), (400, "client_error"), (401, "client_error"),
                                              (429, "rate_limited"), (499, "cancelled"), (503, "error")])
def test_http_status_mapping(code: int, status: str) -> None:
    assert status_of_http(code) == status


@pytest.mark.parametrize(("code", "status"), [
    ("OK", "ok"), ("INVALID_ARGUMENT", "client_error"), ("UNAUTHENTICATED", "client_error"),
    ("RESOURCE_EXHAUSTED", "rate_limited"), ("CANCELLED", "cancelled"), ("UNAVAILABLE", "error"),
    ("INTERNAL", "error")])
def test_grpc_status_mapping(code: str, status: str) -> None:
    assert status_of_grpc(code) == status


def test_rate_limit_rejections_are_counted_per_tenant_and_limit(monkeypatch: pytest.MonkeyPatch,
                                                               metrics: Metrics) -> None:
    monkeypatch.setattr(metrics_module, "METRICS", metrics)
    record_rate_limited("acme", "rpm")
    record_rate_limited("acme", "rpm")
    record_rate_limited("", "tpm")
    assert value(metrics.registry, "sluice_rate_limited_total", tenant="acme", limit="rpm") == 2
    assert value(metrics.registry, "sluice_rate_limited_total", tenant="unknown", limit="tpm") == 1


def test_queue_depth_is_read_at_scrape_time(metrics: Metrics) -> None:
    depth = {"big": 3}
    metrics_module.watch_in_flight(lambda: dict(depth), metrics=metrics)
    assert value(metrics.registry, "sluice_deployment_in_flight", deployment="big") == 3
    depth["big"] = 0
    assert value(metrics.registry, "sluice_deployment_in_flight", deployment="big") == 0
