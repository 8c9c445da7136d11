"""What `sluice bench serve` measures per request, and the figures of a run: request and token throughput, TTFT,
TPOT, ITL and end-to-end latency percentiles, and goodput at the SLOs.

Definitions (times from time.perf_counter, seconds; figures in milliseconds):
- TTFT: from sending the request to the first chunk that carries output.
- TPOT: (last chunk − first chunk) / (output tokens − 1); undefined for one-token outputs.
- ITL: every gap between consecutive output chunks (a chunk may carry several tokens; the gRPC and Triton targets
  report how many, the SSE target only the total from `usage`).
- e2e: from sending to the end of the stream.
- goodput: completed requests whose TTFT and TPOT both meet the SLOs (a one-token output meets the TPOT SLO).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from services.bench.metrics import percentile

QUANTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class Slo:
    ttft_ms: float = 500.0
    tpot_ms: float = 50.0


@dataclass(slots=True)
class RequestRecord:
    target: str
    session: int
    turn: int
    prompt_tokens: int
    expected_tokens: int
    start: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk that carried output
    end: float | None = None
    output_tokens: int = 0
    error: str | None = None
    text: str = ""  # the reply (multi-turn workloads send it back); never written to the results
    http_status: int | None = None  # http target: the response status (503 when admission control shed it)
    retry_after_s: float | None = None  # http target: the Retry-After header of a refused request
    finish_reason: str | None = None  # "stop", "length", "content_filter" (the output guard stopped it), ...

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def tpot(self) -> float | None:
        if not self.chunk_times or self.output_tokens < 2:
            return None
        return (self.chunk_times[-1] - self.chunk_times[0]) / (self.output_tokens - 1)

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:], strict=False)]

    @property
    def e2e(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def meets(self, slo: Slo) -> bool:
        if not self.ok or self.ttft is None:
            return False
        tpot = self.tpot
        return self.ttft * 1000.0 <= slo.ttft_ms and (tpot is None or tpot * 1000.0 <= slo.tpot_ms)


def distribution_ms(values: list[float]) -> dict[str, float | None]:
    """mean and p50/p95/p99 in milliseconds (None without values)."""
    figures: dict[str, float | None] = {
        "mean": round(1000.0 * sum(values) / len(values), 3) if values else None}
    for q in QUANTILES:
        value = percentile(values, q)
        figures[f"p{q}"] = None if value is None else round(1000.0 * value, 3)
    return figures


def summarize_requests(records: list[RequestRecord], wall_s: float, slo: Slo) -> dict[str, object]:
    """The figures of one load level. Throughputs count completed requests only, over the level's wall time."""
    done = [r for r in records if r.ok]
    good = [r for r in done if r.meets(slo)]
    output = sum(r.output_tokens for r in done)
    prompt = sum(r.prompt_tokens for r in done)
    per_s = (lambda n: round(n / wall_s, 3)) if wall_s > 0 else (lambda n: None)
    errors = Counter((r.error or "")[:120] for r in records if not r.ok)
    return {
        "requests": len(records),
        "completed": len(done),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "wall_s": round(wall_s, 3),
        "prompt_tokens": prompt,
        "output_tokens": output,
        "expected_output_tokens": sum(r.expected_tokens for r in done),
        "request_throughput": per_s(len(done)),
        "output_token_throughput": per_s(output),
        "total_token_throughput": per_s(prompt + output),
        "ttft_ms": distribution_ms([r.ttft for r in done if r.ttft is not None]),
        "tpot_ms": distribution_ms([r.tpot for r in done if r.tpot is not None]),
        "itl_ms": distribution_ms([gap for r in done for gap in r.itls]),
        "e2e_ms": distribution_ms([r.e2e for r in done if r.e2e is not None]),
        # per-stream decode speed: 1 / TPOT, the rate a reader sees tokens arrive once the first one is there
        "stream_tokens_per_s_p50": _rate_p50(done),
        "goodput": {
            "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
            "good_requests": len(good),
            "fraction": round(len(good) / len(records), 4) if records else None,
            "requests_per_s": per_s(len(good)),
        },
    }


def _rate_p50(records: list[RequestRecord]) -> float | None:
    rates = [1.0 / r.tpot for r in records if r.tpot]
    value = percentile(rates, 50)
    return None if value is None else round(value, 2)
