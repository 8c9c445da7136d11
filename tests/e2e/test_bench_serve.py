"""`sluice bench serve` against the real stack, with tiny workloads: every target, both load modes, the three
workload shapes and the overhead comparison complete without errors and with exactly the drawn output lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.bench.serve import ServeConfig, run
from services.bench.serve_workload import LengthDist
from services.common.settings import Settings

pytestmark = pytest.mark.timeout(300)

TINY = {"sessions": 3, "prompt_len": LengthDist.parse("8:24"), "output_len": LengthDist.parse("4:6"), "warmup": 1}


def _check_level(level: dict) -> None:
    assert level["errors"] == 0, level["error_kinds"]
    assert level["completed"] == level["requests"] > 0
    assert level["output_tokens"] == level["expected_output_tokens"]  # min_tokens = max_tokens: exact lengths
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        figures = level[metric]
        if metric == "itl_ms" and figures["p50"] is None:
            continue  # the output guard may release a short SSE reply in one chunk: no gaps between chunks
        # (an SSE chunk may carry several tokens: TPOT and ITL can be tiny, never negative)
        assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"], (metric, figures)
    assert level["ttft_ms"]["p50"] > 0
    assert level["ttft_ms"]["p99"] <= level["e2e_ms"]["p99"]
    assert level["request_throughput"] > 0 and level["output_token_throughput"] > 0
    assert 0.0 <= level["goodput"]["fraction"] <= 1.0


@pytest.mark.parametrize("target", ["http", "grpc", "triton"])
def test_each_target_at_two_concurrencies(stack: Settings, api_key: str, tmp_path: Path, target: str) -> None:
    report = run(stack, ServeConfig(target=target, concurrency=(1, 2), api_key=api_key, **TINY), tmp_path)
    assert [level["load"] for level in report["levels"]] == [{"concurrency": 1}, {"concurrency": 2}]
    for level in report["levels"]:
        _check_level(level)
    written = json.loads((tmp_path / "serve.json").read_text())
    assert written["meta"]["targets"] == [target] and "api_key" not in written["meta"]
    charts = written["charts"]
    assert "skipped" in charts or all((tmp_path / name).stat().st_size > 0 for name in charts.values())


def test_multi_turn_and_shared_prefix_under_poisson_arrivals(stack: Settings, api_key: str, tmp_path: Path) -> None:
    multi = run(stack, ServeConfig(workload="multi-turn", turns=3, rates=(4.0,), api_key=api_key, **TINY),
                tmp_path / "multi")
    level = multi["levels"][0]
    _check_level(level)
    assert level["load"] == {"rate": 4.0} and level["requests"] == 3 * 3
    shared = run(stack, ServeConfig(workload="shared-prefix", system_len=96, concurrency=(2,), api_key=api_key,
                                    **TINY), tmp_path / "shared")
    _check_level(shared["levels"][0])
    assert shared["levels"][0]["prompt_tokens"] > 3 * 96


def test_overhead_through_the_cli(stack: Settings, api_key: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli.main import main
    from services.supervisor.stack import settings_env

    for name, value in settings_env(stack).items():
        if name.startswith("SLUICE_"):
            monkeypatch.setenv(name, value)
    code = main(["bench", "serve", "--overhead", "--concurrency", "1", "--sessions", "4", "--rounds", "2",
                 "--prompt-len", "8:16", "--output-len", "8", "--api-key", api_key, "--results", str(tmp_path)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    level = json.loads((tmp_path / "serve.json").read_text())["levels"][0]
    assert printed["levels"][0]["added_ttft_p50_ms"] == level["added_ttft_p50_ms"]
    for target in ("triton", "http"):
        _check_level(level["targets"][target])
        assert level["targets"][target]["requests"] == 4  # the same sessions through both paths
    prompts = [level["targets"][target]["prompt_tokens"] for target in ("triton", "http")]
    assert abs(prompts[0] - prompts[1]) <= 0.1 * prompts[0]  # same lengths, other words (within a word each)
    assert level["targets"]["triton"]["output_tokens"] == level["targets"]["http"]["output_tokens"]
    assert isinstance(level["added_ttft_p50_ms"], float) and level["token_rate_ratio"] > 0
