"""`sluice bench serve`'s statistics: TTFT, TPOT, ITL, e2e, percentiles, throughput and goodput at the SLOs,
on request records whose timings are known exactly; plus the workload's length distributions."""

from __future__ import annotations

import random

import pytest

from services.bench.serve import overhead_figures
from services.bench.serve_metrics import RequestRecord, Slo, distribution_ms, summarize_requests
from services.bench.serve_workload import LengthDist, Session, Turn, build_sessions, messages_for


def record(ttft: float, gaps: list[float], tokens: int | None = None, *, prompt: int = 10,
           error: str | None = None, start: float = 100.0) -> RequestRecord:
    """A request sent at `start` whose first chunk came `ttft` s later and the next ones `gaps` apart."""
    times = [start + ttft]
    for gap in gaps:
        times.append(times[-1] + gap)
    r = RequestRecord("http", 0, 0, prompt, tokens or len(times), start=start, chunk_times=times,
                      output_tokens=tokens or len(times), error=error)
    r.end = None if error else times[-1] + 0.001
    return r


def test_one_request_ttft_tpot_itl_e2e() -> None:
    r = record(0.2, [0.01, 0.03, 0.02])  # 4 chunks of one token
    assert r.ttft == pytest.approx(0.2)
    assert r.itls == pytest.approx([0.01, 0.03, 0.02])
    assert r.tpot == pytest.approx(0.06 / 3)
    assert r.e2e == pytest.approx(0.261)


def test_tpot_counts_tokens_not_chunks() -> None:
    r = record(0.1, [0.05], tokens=11)  # two SSE chunks carrying eleven tokens
    assert r.tpot == pytest.approx(0.05 / 10)
    assert record(0.1, [], tokens=1).tpot is None  # one token: no time per output token


def test_distribution_is_numpy_linear_percentiles_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    figures = distribution_ms(values)
    assert figures == {"mean": 50.5, "p50": 50.5, "p95": 95.05, "p99": 99.01}
    assert distribution_ms([]) == {"mean": None, "p50": None, "p95": None, "p99": None}


def test_goodput_needs_both_slos_and_completion() -> None:
    slo = Slo(ttft_ms=500, tpot_ms=50)
    good = record(0.4, [0.04] * 4)
    slow_first = record(0.6, [0.01] * 4)
    slow_decode = record(0.1, [0.06] * 4)
    at_the_edge = record(0.5, [0.05] * 4)
    single = record(0.3, [], tokens=1)  # no TPOT: only TTFT counts
    failed = record(0.1, [0.01], error="HTTP 503")
    records = [good, slow_first, slow_decode, at_the_edge, single, failed]
    assert [r.meets(slo) for r in records] == [True, False, False, True, True, False]

    summary = summarize_requests(records, wall_s=2.0, slo=slo)
    assert summary["requests"] == 6 and summary["completed"] == 5 and summary["errors"] == 1
    assert summary["error_kinds"] == {"HTTP 503": 1}
    assert summary["goodput"] == {"slo": {"ttft_ms": 500, "tpot_ms": 50}, "good_requests": 3, "fraction": 0.5,
                                  "requests_per_s": 1.5}
    assert summary["request_throughput"] == 2.5  # completed requests / wall time
    assert summary["output_tokens"] == 5 * 4 + 1
    assert summary["output_token_throughput"] == 10.5
    assert summary["total_token_throughput"] == (21 + 50) / 2
    assert summary["ttft_ms"]["p50"] == 400.0
    assert summary["tpot_ms"]["p50"] == pytest.approx(45.0)  # median of 40, 10, 60, 50
    assert summary["stream_tokens_per_s_p50"] == pytest.approx(22.5, abs=0.01)  # median of 1/TPOT


def test_empty_level_has_no_figures_rather_than_failing() -> None:
    summary = summarize_requests([], wall_s=1.0, slo=Slo())
    assert summary["requests"] == 0 and summary["goodput"]["fraction"] is None
    assert summary["ttft_ms"]["p50"] is None


def test_overhead_figures_compare_platform_with_triton() -> None:
    slo = Slo()
    triton = summarize_requests([record(0.010, [0.004] * 9), record(0.012, [0.004] * 9)], 1.0, slo)
    http = summarize_requests([record(0.018, [0.004] * 9), record(0.020, [0.005] * 9)], 1.0, slo)
    figures = overhead_figures({"triton": triton, "http": http})
    assert figures["added_ttft_p50_ms"] == pytest.approx(8.0)
    assert figures["token_rate_ratio"] == pytest.approx(((250 + 200) / 2) / 250)  # median of 1/TPOT: 250, 200
    assert figures["meets_targets"] == {"added_ttft_p50_le_10ms": True, "token_rate_ratio_ge_0_9": True}


@pytest.mark.parametrize(("text", "low", "high"), [("32", 32, 32), ("16:64", 16, 64), ("normal:50:10", 1, 100)])
def test_length_distributions_stay_in_range(text: str, low: int, high: int) -> None:
    dist = LengthDist.parse(text)
    rng = random.Random(0)
    draws = [dist.sample(rng) for _ in range(2000)]
    assert low <= min(draws) and max(draws) <= high == dist.high
    assert str(dist) == text
    if dist.kind == "uniform":
        assert {min(draws), max(draws)} == {16, 64}


@pytest.mark.parametrize("text", ["0", "64:16", "normal:5", "x", "normal:10:-1"])
def test_bad_length_distributions_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LengthDist.parse(text)


def test_multi_turn_history_carries_the_replies() -> None:
    session = Session(0, "be brief", (Turn("one", 4), Turn("two", 4), Turn("three", 4)))
    assert messages_for(session, 2, ["r1", "r2"]) == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
        {"role": "assistant", "content": "r1"}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": "r2"}, {"role": "user", "content": "three"}]


def test_variants_are_the_same_lengths_in_other_words(demo_tokenizer) -> None:
    kw = {"prompt_len": LengthDist.parse("16:48"), "output_len": LengthDist.parse("4:12"), "seed": 3}
    a = build_sessions("random", 6, demo_tokenizer, variant="triton", **kw)
    b = build_sessions("random", 6, demo_tokenizer, variant="http", **kw)
    assert [t.output_len for s in a for t in s.turns] == [t.output_len for s in b for t in s.turns]
    for left, right in zip(a, b, strict=True):
        assert left.turns[0].user != right.turns[0].user  # no shared prefix between the two paths
        n_left, n_right = (len(demo_tokenizer.encode(s.turns[0].user)) for s in (left, right))
        assert abs(n_left - n_right) <= 8  # both the drawn length, each within one word (a few tokens)
    assert build_sessions("random", 6, demo_tokenizer, variant="triton", **kw) == a  # deterministic


def test_a_conversation_longer_than_the_context_is_refused(demo_tokenizer) -> None:
    with pytest.raises(ValueError, match="context window"):
        build_sessions("multi-turn", 1, demo_tokenizer, prompt_len=LengthDist.parse("200"),
                       output_len=LengthDist.parse("100"), turns=4, context_window=1024)
