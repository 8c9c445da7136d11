"""Prometheus metrics of the Sluice services, served as text at /metrics on each service's metrics port.

Token-level latency (TTFT, time per output token, inter-token latency), end-to-end latency, requests and tokens by
model / tenant / status, goodput against the TTFT and TPOT SLOs, pipeline stage latency, cache lookups, queue depth,
rate-limit rejections, safety actions and retrieval latency. The engine's own metrics (sluice_engine_*) come from
Triton's metrics port; Envoy's from its admin port.

Status values of `sluice_requests_total`: ok, client_error (4xx), rate_limited (429), error (5xx or a failure
mid-stream) and cancelled (the client went away). A request is *good* when its TTFT and its TPOT are within the SLOs;
goodput is good / judged, where every request that was not a client error, a rate-limit rejection or a
cancellation is judged.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STATUSES = ("ok", "client_error", "rate_limited", "error", "cancelled")
UNJUDGED = frozenset({"client_error", "rate_limited", "cancelled"})
GOODPUT_WINDOW_S = 300.0
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0)


class _Goodput(Collector):
    """sluice_goodput_ratio{model}: good / judged over the last GOODPUT_WINDOW_S seconds, computed at scrape."""

    def __init__(self, window_s: float = GOODPUT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._judged: dict[str, deque[tuple[float, bool]]] = {}

    def add(self, model: str, good: bool) -> None:
        with self._lock:
            self._judged.setdefault(model, deque()).append((self.clock(), good))

    def ratio(self, model: str) -> float | None:
        with self._lock:
            window = self._judged.get(model)
            if not window:
                return None
            horizon = self.clock() - self.window_s
            while window and window[0][0] < horizon:
                window.popleft()
            return sum(good for _, good in window) / len(window) if window else None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("sluice_goodput_ratio", "Share of recent requests (5 min) meeting both the TTFT "
                                   "and the TPOT SLO", labels=["model"])
        for model in list(self._judged):
            ratio = self.ratio(model)
            if ratio is not None:
                family.add_metric([model], ratio)
        yield family


class _Gauges(Collector):
    """Gauges read at scrape time from callables registered by the service (e.g. in-flight requests per
    deployment from the router)."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, str, str, Callable[[], dict[str, float]]]] = []

    def watch(self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        self._sources.append((name, documentation, label, read))

    def collect(self) -> Iterator[Metric]:
        for name, documentation, label, read in self._sources:
            family = GaugeMetricFamily(name, documentation, labels=[label])
            for key, value in read().items():
                family.add_metric([key], float(value))
            yield family


class Metrics:
    """The metric families, registered once per registry (tests pass a fresh CollectorRegistry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        r = {"registry": registry}
        self.requests = Counter("sluice_requests_total", "Chat requests by model, tenant and status",
                                ["model", "tenant", "status"], **r)
        self.request_seconds = Histogram("sluice_request_duration_seconds", "End-to-end request latency at the "
                                         "orchestrator", ["model", "status"], buckets=E2E_BUCKETS, **r)
        self.ttft = Histogram("sluice_ttft_seconds", "Time to first token (request arrival to the first streamed "
                              "token)", ["model"], buckets=TTFT_BUCKETS, **r)
        self.tpot = Histogram("sluice_tpot_seconds", "Time per output token after the first, per request",
                              ["model"], buckets=TOKEN_BUCKETS, **r)
        self.itl = Histogram("sluice_inter_token_latency_seconds", "Gap between consecutive output tokens",
                             ["model"], buckets=TOKEN_BUCKETS, **r)
        self.tokens = Counter("sluice_tokens_total", "Tokens by model, tenant and kind (prompt, completion, "
                              "cached_prompt)", ["model", "tenant", "kind"], **r)
        self.finish_reasons = Counter("sluice_finish_reasons_total", "Finished answers by finish reason",
                                      ["model", "reason"], **r)
        self.slo_judged = Counter("sluice_slo_requests_total", "Requests judged against the TTFT and TPOT SLOs",
                                  ["model"], **r)
        self.slo_good = Counter("sluice_slo_good_requests_total", "Judged requests that met both SLOs",
                                ["model"], **r)
        self.stage_seconds = Histogram("sluice_stage_duration_seconds", "Pipeline stage latency",
                                       ["stage", "outcome"], buckets=STAGE_BUCKETS, **r)
        self.cache_lookups = Counter("sluice_response_cache_lookups_total", "Response-cache lookups by result",
                                     ["result"], **r)
        self.rate_limited = Counter("sluice_rate_limited_total", "Requests rejected by a rate limit or quota",
                                    ["tenant", "limit"], **r)
        self.admission_shed = Counter("sluice_admission_shed_total", "Requests shed by admission control (predicted "
                                      "TTFT over the tier's budget), by deployment, tier and outcome (fallback, "
                                      "rejected)", ["deployment", "tier", "outcome"], **r)
        self.rpc = Counter("sluice_rpc_requests_total", "gRPC calls served, by method and status code",
                           ["service", "method", "code"], **r)
        self.rpc_seconds = Histogram("sluice_rpc_duration_seconds", "gRPC call latency", ["service", "method"],
                                     buckets=E2E_BUCKETS, **r)
        self.safety_actions = Counter("sluice_safety_actions_total", "Safety decisions other than allow, by "
                                      "direction, action and category", ["direction", "action", "category"], **r)
        self.safety_seconds = Histogram("sluice_safety_check_duration_seconds", "Safety check latency",
                                        ["direction"], buckets=STAGE_BUCKETS, **r)
        self.retrieval_seconds = Histogram("sluice_retrieval_duration_seconds", "Retrieval search latency by phase "
                                           "(embed, search, total)", ["phase"], buckets=STAGE_BUCKETS, **r)
        self.goodput = _Goodput()
        self.gauges = _Gauges()
        registry.register(self.goodput)
        registry.register(self.gauges)


METRICS = Metrics()


def record_rate_limited(tenant: str, limit: str) -> None:
    """Counts one request rejected by `limit` (e.g. "rpm", "tpm", "concurrency", "daily_tokens") for `tenant`."""
    METRICS.rate_limited.labels(tenant or "unknown", limit).inc()


def record_safety(direction: str, action: str, categories: Iterable[str], seconds: float | None = None,
                  metrics: Metrics = METRICS) -> None:
    """One safety decision: `direction` input|output, `action` allow|redact|block|stop (allow is not counted)."""
    if seconds is not None:
        metrics.safety_seconds.labels(direction).observe(seconds)
    if action != "allow":
        for category in sorted(set(categories)) or ["none"]:
            metrics.safety_actions.labels(direction, action, category).inc()


def record_retrieval(embed_s: float, search_s: float, total_s: float, metrics: Metrics = METRICS) -> None:
    for phase, seconds in (("embed", embed_s), ("search", search_s), ("total", total_s)):
        metrics.retrieval_seconds.labels(phase).observe(seconds)


def record_stage(stage: str, outcome: str, seconds: float, metrics: Metrics = METRICS) -> None:
    metrics.stage_seconds.labels(stage, outcome).observe(seconds)


def watch_in_flight(read: Callable[[], dict[str, float]], metrics: Metrics = METRICS) -> None:
    """Queue depth: `read()` gives requests in flight per deployment, read at every scrape."""
    metrics.gauges.watch("sluice_deployment_in_flight", "Requests in flight per deployment (the routing queue)",
                         "deployment", read)


CIRCUIT_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def watch_circuits(read: Callable[[], dict[str, str]], metrics: Metrics = METRICS) -> None:
    """Circuit breakers: `read()` gives each breaker's state (closed, half_open, open) by name, e.g.
    `deployment:sluice-demo` or `stage:input_guard`; exported as 0, 1 or 2."""
    metrics.gauges.watch("sluice_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", "circuit",
                         lambda: {name: CIRCUIT_STATES[state] for name, state in read().items()})


def start_metrics_server(port: int, host: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Serves /metrics (Prometheus text) from a background thread."""
    disable_created_metrics()  # no `*_created` series: they double the output and nothing here reads them
    start_http_server(port, addr=host, registry=registry)


@dataclass(slots=True)
class LLMRequest:
    """One chat request as the metrics see it: opened by the telemetry interceptor when the call arrives, filled
    in by the pipeline (model, tenant, token arrivals, finish) and recorded once when the call ends."""

    started: float = field(default_factory=time.monotonic)
    model: str = "unknown"
    tenant: str = "unknown"
    first_token_at: float | None = None
    last_token_at: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str | None = None
    failed: bool = False  # an error after the response started (an SSE error frame, an aborted stream)
    cache_result: str | None = None
    gaps: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the previous token, tokens)

    def tokens_arrived(self, count: int, now: float | None = None) -> None:
        if count <= 0:
            return
        now = time.monotonic() if now is None else now
        if self.first_token_at is None:
            self.first_token_at = now
        elif self.last_token_at is not None:
            self.gaps.append((now - self.last_token_at, count))
        self.last_token_at = now
        self.output_tokens += count

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_at is None or self.last_token_at is None or self.output_tokens < 2:
            return None
        return (self.last_token_at - self.first_token_at) / (self.output_tokens - 1)

    def good(self, slo_ttft_s: float, slo_tpot_s: float) -> bool:
        ttft, tpot = self.ttft_s, self.tpot_s
        return ttft is not None and ttft <= slo_ttft_s and (tpot is None or tpot <= slo_tpot_s)

    def record(self, status: str, *, slo_ttft_s: float, slo_tpot_s: float, metrics: Metrics = METRICS,
               now: float | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if status == "ok" and self.failed:
            status = "error"
        now = time.monotonic() if now is None else now
        model = self.model
        metrics.requests.labels(model, self.tenant, status).inc()
        metrics.request_seconds.labels(model, status).observe(now - self.started)
        if self.ttft_s is not None:
            metrics.ttft.labels(model).observe(self.ttft_s)
        if self.tpot_s is not None:
            metrics.tpot.labels(model).observe(self.tpot_s)
        itl = metrics.itl.labels(model)
        for gap, count in self.gaps:  # a coalesced chunk of n tokens counts n gaps of gap / n
            for _ in range(count):
                itl.observe(gap / count)
        for kind, count in (("prompt", self.prompt_tokens), ("completion", self.output_tokens),
                            ("cached_prompt", self.cached_prompt_tokens)):
            if count:
                metrics.tokens.labels(model, self.tenant, kind).inc(count)
        if self.finish_reason:
            metrics.finish_reasons.labels(model, self.finish_reason).inc()
        if self.cache_result:
            metrics.cache_lookups.labels(self.cache_result).inc()
        if status not in UNJUDGED:
            good = status == "ok" and self.good(slo_ttft_s, slo_tpot_s)
            metrics.slo_judged.labels(model).inc()
            if good:
                metrics.slo_good.labels(model).inc()
            metrics.goodput.add(model, good)


def status_of_http(code: int) -> str:
    if code < 400:
        return "ok"
    if code == 429:
        return "rate_limited"
    if code == 499:
        return "cancelled"
    return "client_error" if code < 500 else "error"


CLIENT_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "UNAUTHENTICATED",
                          "FAILED_PRECONDITION", "OUT_OF_RANGE"})


def status_of_grpc(code_name: str) -> str:
    if code_name == "OK":
        return "ok"
    if code_name == "RESOURCE_EXHAUSTED":
        return "rate_limited"
    if code_name == "CANCELLED":
        return "cancelled"
    return "client_error" if code_name in CLIENT_CODES else "error"


def sample_values(registry: CollectorRegistry, name: str) -> Iterable[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` (for tests and the benchmark)."""
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value
