"""The overload benchmark's own arithmetic, on hand-made request records: the pace that finds saturation, and the
admission figures of a phase (admitted goodput, shed per tier, Retry-After)."""

from __future__ import annotations

import pytest

from services.bench.overload import MixedTierTarget, pace, phase_figures
from services.bench.serve_metrics import RequestRecord, Slo


def record(session: int, start: float, ttft: float | None = 0.1, e2e: float = 0.5, status: int = 200,
           retry_after: float | None = None) -> RequestRecord:
    r = RequestRecord("http", session, 0, 10, 4, start=start, output_tokens=4, http_status=status,
                      retry_after_s=retry_after)
    if status != 200:
        r.error = f"HTTP {status}: overloaded"
        return r
    r.chunk_times = [start + ttft, start + ttft + 0.01, start + ttft + 0.02, start + ttft + 0.03]
    r.end = start + e2e
    return r


def test_pace_is_one_while_completions_keep_up_and_falls_with_a_backlog() -> None:
    steady = [record(i, start=float(i)) for i in range(10)]  # one a second, each done in 0.5 s
    assert pace(steady) == 1.0
    # arrivals over 9 s, but the last ones finish 9 s later than they would have: a backlog built up
    backlog = [record(i, start=float(i), e2e=0.5 + i) for i in range(10)]
    assert pace(backlog) == pytest.approx((10 / 18.5) / (9 / 9), abs=1e-3)  # completions/s over arrivals/s
    assert pace([record(0, 0.0, status=503)]) is None


def test_phase_figures_count_admitted_goodput_shed_per_tier_and_retry_after() -> None:
    assert [MixedTierTarget.tier_of(i) for i in range(4)] == ["free", "plus", "enterprise", "free"]
    records = [
        record(0, 0.0, status=503, retry_after=1.0),  # free: shed
        record(1, 0.1),  # plus: good
        record(2, 0.2, ttft=0.9),  # enterprise: admitted, TTFT over the SLO
        record(3, 0.3, status=503, retry_after=3.0),  # free: shed
        record(4, 0.4),  # plus: good
        record(5, 0.5),  # enterprise: good
    ]
    figures = phase_figures(records, wall_s=2.0, slo=Slo(ttft_ms=500, tpot_ms=50))
    assert (figures["sent"], figures["admitted"], figures["shed"], figures["good"]) == (6, 4, 2, 3)
    assert figures["admitted_goodput"] == 0.75 and figures["goodput_per_s"] == 1.5
    assert figures["shed_overloaded"] == 2 and figures["failed_after_admission"] == 0
    tiers = figures["per_tier"]
    assert tiers["free"] == {"sent": 2, "shed": 2, "shed_fraction": 1.0, "admitted_goodput": None}
    assert tiers["enterprise"]["admitted_goodput"] == 0.5 and tiers["plus"]["shed_fraction"] == 0.0
    assert figures["retry_after_s"]["histogram"] == {"1": 1, "3": 1} and figures["retry_after_s"]["max"] == 3.0
