"""The benchmark's machinery on a tiny random model: structure and invariants, never timing targets."""

from __future__ import annotations

import json

import pytest
import torch

from services.bench import engine_bench
from services.bench.drivers import run_mode, run_prefix_reuse
from services.bench.metrics import percentile
from services.bench.workload import (
    RequestSpec,
    chat_length_workload,
    mixed_workload,
    shared_prefix_workload,
    static_batching_ceiling,
)
from tests.unit.engine_factories import make_model

TINY = engine_bench.Profile(concurrencies=(1, 3), rounds=2, sequential_requests=2, prompt_len=(4, 12),
                            output_len=(2, 9), prefix_requests=4, prefix_system_len=32, prefix_user_len=4,
                            prefix_output_len=3, chat_lengths_concurrency=3, chat_lengths_rounds=2,
                            chat_lengths_median=4, chat_lengths_range=(2, 12), peer_requests=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: one thread is fastest, and robust when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([float(i) for i in range(101)], 95) == pytest.approx(95.0)


def test_workloads_are_deterministic_and_in_range() -> None:
    a = mixed_workload(20, 97, seed=1, prompt_len=(4, 12), output_len=(2, 9))
    assert a == mixed_workload(20, 97, seed=1, prompt_len=(4, 12), output_len=(2, 9))
    assert all(4 <= len(s.prompt_ids) <= 12 and 2 <= s.output_len <= 9 for s in a)
    assert all(3 <= t < 97 for s in a for t in s.prompt_ids)
    shared = shared_prefix_workload(4, 97, system_len=32, user_len=4)
    assert len({tuple(s.prompt_ids[:32]) for s in shared}) == 1
    assert len({tuple(s.prompt_ids[32:]) for s in shared}) == 4


def test_chat_lengths_are_long_tailed_deterministic_and_clipped() -> None:
    a = chat_length_workload(400, 97, seed=5, prompt_len=(4, 12), median_output=32, output_len=(8, 200))
    assert a == chat_length_workload(400, 97, seed=5, prompt_len=(4, 12), median_output=32, output_len=(8, 200))
    lengths = sorted(s.output_len for s in a)
    assert lengths[0] >= 8 and lengths[-1] <= 200
    assert 24 <= lengths[len(lengths) // 2] <= 42  # the median is near the one asked for
    assert lengths[-1] >= 4 * lengths[len(lengths) // 2]  # and the tail is long
    # a uniform draw over the same range never has a batch whose longest is far past twice the mean
    uniform = mixed_workload(400, 97, seed=5, prompt_len=(4, 12), output_len=(8, 200))
    assert static_batching_ceiling(a, 32) > static_batching_ceiling(uniform, 32)


def test_static_batching_ceiling_counts_the_padded_steps() -> None:
    specs = [RequestSpec(str(i), [3], n) for i, n in enumerate([10, 2, 4, 4])]
    # batches of two: (10, 2) runs 2 × 10 row-steps, (4, 4) 2 × 4, for 20 tokens wanted
    assert static_batching_ceiling(specs, 2) == pytest.approx(28 / 20)
    assert static_batching_ceiling(specs, 1) == 1.0


@pytest.mark.parametrize("mode", ["sequential", "static", "static_shrinking", "inflight"])
def test_every_mode_completes_every_request_with_exact_lengths(mode: str) -> None:
    model = make_model()
    specs = mixed_workload(7, 97, seed=2, prompt_len=(4, 12), output_len=(2, 9))
    figures, sinks = run_mode(model, mode, specs, 3)
    assert figures["completed"] == figures["requests"] == 7 and figures["errors"] == 0
    assert figures["output_tokens"] == figures["expected_tokens"] == sum(s.output_len for s in specs)
    assert [s.tokens for s in sinks] == [s.output_len for s in specs]
    for key in ("ttft_ms", "tpot_ms"):
        assert 0 < figures[key]["p50"] <= figures[key]["p95"]
    assert figures["preemptions"] == 0 and 0 <= figures["kv_waste"] < 1


def test_modes_generate_the_same_greedy_tokens() -> None:
    model = make_model()
    specs = mixed_workload(5, 97, seed=3, prompt_len=(4, 12), output_len=(2, 9))
    outputs = {mode: [s.token_ids for s in run_mode(model, mode, specs, 2)[1]]
               for mode in ("sequential", "static", "static_shrinking", "inflight")}
    assert outputs["sequential"] == outputs["static"] == outputs["static_shrinking"] == outputs["inflight"]


def test_static_batches_compute_every_row_until_the_batch_longest_is_done() -> None:
    model = make_model()
    specs = mixed_workload(6, 97, seed=4, prompt_len=(4, 12), output_len=(2, 9))
    lengths = [s.output_len for s in specs]
    padded = run_mode(model, "static", specs, 3)[1]
    shrinking = run_mode(model, "static_shrinking", specs, 3)[1]
    expected = [max(lengths[i // 3 * 3:i // 3 * 3 + 3]) - n for i, n in enumerate(lengths)]
    assert [s.padding_tokens for s in padded] == expected and sum(expected) > 0
    assert [s.padding_tokens for s in shrinking] == [0] * len(specs)
    assert [s.tokens for s in padded] == lengths  # padding is not output


def test_prefix_reuse_hits_only_when_enabled() -> None:
    model = make_model()
    specs = shared_prefix_workload(4, 97, system_len=32, user_len=4, output_len=3)
    on = run_prefix_reuse(model, specs, reuse=True, arrival="sequential")
    off = run_prefix_reuse(model, specs, reuse=False, arrival="sequential")
    assert off["prefix_hit_tokens"] == 0
    assert on["prefix_hit_tokens"] == 3 * 32  # requests 2..4 reuse the 32-token system prompt (block size 16)
    burst = run_prefix_reuse(model, specs, reuse=True, arrival="burst")
    assert burst["completed"] == 4


def test_bench_model_and_report(tmp_path, monkeypatch) -> None:
    model = make_model()
    logs: list[str] = []
    figures = engine_bench.bench_model("tiny", model, "random", TINY, log=logs.append)
    assert set(figures["throughput"]) == {"sequential", "static", "static_shrinking", "inflight"}
    assert {c for runs in figures["throughput"].values() for c in runs} == {"1", "3"}
    assert figures["throughput"]["sequential"]["3"]["requests"] == 2
    assert figures["throughput"]["inflight"]["3"]["requests"] == 6
    assert figures["ratios"]["3"]["inflight_vs_sequential"] > 0
    assert 0 <= figures["kv_waste"]["all_runs"] < 1
    assert set(figures["static_ceiling"]) == {"3"} and figures["static_ceiling"]["3"] >= 1
    chat = figures["chat_lengths"]
    assert chat["requests"] == 6 and chat["static_ceiling"] >= 1
    assert chat["throughput"]["static"]["output_tokens"] == chat["throughput"]["inflight"]["output_tokens"]
    assert chat["inflight_vs_static"] > 0
    assert set(figures["prefix_reuse"]) == {"sequential", "burst"}
    assert figures["prefix_reuse"]["sequential"]["hit_rate"] > 0
    summary = engine_bench.target_summary({"tiny": figures})
    assert {row["model"] for row in summary} == {"tiny"}
    assert any("log-normal" in row["target"] for row in summary)
    results = {"meta": {"quick": True, "torch_threads": 1, "started_utc": "now"}, "models": {"tiny": figures},
               "summary": summary}
    json.dumps(results)  # everything is JSON-serialisable
    assert "inflight" in engine_bench.format_table(results)
