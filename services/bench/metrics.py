"""Per-request timings recorded from the engine's outputs, and the figures computed from them."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from engine.request import StepOutput


@dataclass(slots=True)
class TimingSink:
    """An engine output sink that timestamps tokens (time.perf_counter, seconds)."""

    request_id: str
    expected_tokens: int
    submitted: float = 0.0
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    finished: bool = False
    cached_tokens: int = 0
    error: str | None = None
    token_ids: list[int] = field(default_factory=list)
    padding_tokens: int = 0  # generated past `expected_tokens` to keep a static batch's shape: not output

    def is_cancelled(self) -> bool:
        return False

    def emit(self, output: StepOutput) -> None:
        wanted = output.new_token_ids[:max(self.expected_tokens - self.tokens, 0)]
        self.padding_tokens += len(output.new_token_ids) - len(wanted)
        if wanted:
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.last = now
            self.tokens += len(wanted)
            self.token_ids.extend(wanted)
        self.cached_tokens = output.cached_tokens
        if output.finished:
            self.finished = True

    def fail(self, error: Exception) -> None:
        self.error = repr(error)
        self.finished = True

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.submitted

    @property
    def tpot(self) -> float | None:
        if self.first is None or self.last is None or self.tokens < 2:
            return None
        return (self.last - self.first) / (self.tokens - 1)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def summarize(sinks: list[TimingSink], wall_s: float) -> dict[str, object]:
    """Throughput and latency figures of one run. Latencies in milliseconds."""
    ttfts = [s.ttft for s in sinks if s.ttft is not None]
    tpots = [s.tpot for s in sinks if s.tpot is not None]
    tokens = sum(s.tokens for s in sinks)
    return {
        "requests": len(sinks),
        "completed": sum(1 for s in sinks if s.finished and s.error is None),
        "errors": sum(1 for s in sinks if s.error is not None),
        "output_tokens": tokens,
        "expected_tokens": sum(s.expected_tokens for s in sinks),
        "wall_s": round(wall_s, 4),
        "output_tokens_per_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "ttft_ms": {"p50": _ms(percentile(ttfts, 50)), "p95": _ms(percentile(ttfts, 95))},
        "tpot_ms": {"p50": _ms(percentile(tpots, 50)), "p95": _ms(percentile(tpots, 95))},
    }
