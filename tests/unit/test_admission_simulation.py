"""Issue S9's admission goals replayed on a simulated continuous-batching engine behind the real Router, on a fake
clock (tests/unit/admission_sim.py): load the engine serves within the TTFT SLO is not shed, an overload is shed
lowest tier first with the admitted requests meeting the SLO, and admission reopens within 2 s of an overload."""

from __future__ import annotations

from services.orchestrator.admission import AdmissionPolicy
from tests.unit.admission_sim import Simulation, poisson_arrivals, served_fraction, streams_at, within

SLO_S = 0.5
TIERS = ("free", "plus", "enterprise")


def test_sixteen_streams_that_the_engine_serves_within_the_slo_are_all_admitted() -> None:
    direct = Simulation(admission=None).closed_loop(16, 64)  # Triton direct: no admission control
    assert within(direct, SLO_S) >= 0.95  # the premise: the engine meets the SLO at this concurrency
    sim = Simulation(AdmissionPolicy(ttft_slo_s=SLO_S))
    for phase in range(3):  # a cold start, then bursts of 16 streams against what the earlier ones taught
        served = sim.closed_loop(16, 64)
        assert served_fraction(served) >= 0.95, phase
        assert within(served, SLO_S) >= 0.95, phase
    after = sim.closed_loop(4, 48)  # the issue: right after a 16-stream burst, 46 of 48 at concurrency 4 got 503
    assert served_fraction(after) == 1.0


def test_an_overload_is_shed_lowest_tier_first_and_admission_reopens_within_two_seconds() -> None:
    sim = Simulation(AdmissionPolicy(ttft_slo_s=SLO_S))
    sim.closed_loop(4, 16)  # warm: the estimate describes a quiet engine
    start = sim.clock.now
    end = start + 10.0
    overload = poisson_arrivals(start, 40.0, 10.0, seed=2, prompt=(120, 160))  # ≈ 2× what the engine sustains
    requests = sim.run(overload + streams_at(end, 4), closed_loop_requests=60)  # then 4 streams from its end on
    surge = [r for r in requests if r.client is None]
    moderate = [r for r in requests if r.client is not None]

    shed = {tier: sum(r.shed for r in surge if r.tier == tier) / sum(r.tier == tier for r in surge) for tier in TIERS}
    assert shed["free"] > shed["plus"] > shed["enterprise"] and shed["free"] > 0.3  # it was an overload
    admitted = [r for r in surge if not r.shed]
    assert sum(r.ttft <= SLO_S for r in admitted) / len(admitted) >= 0.9  # what was admitted was served in time

    late = [r for r in moderate if r.arrival >= end + 2.0]
    assert len(late) >= 40 and all(not r.shed for r in late)  # from 2 s after the overload on, nothing is shed
    assert within(late, SLO_S) == 1.0
