"""`sluice bench peers` without processes: the table built from request records whose timings are known exactly,
the vLLM ratio, skipped rows, the report's Markdown, the workload's lengths and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bench.peers_bench import PeersConfig, peer_sessions, run_stack_rows, run_vllm_row, template_overhead
from services.bench.peers_report import markdown_report, markdown_table, table_rows
from services.bench.serve_metrics import RequestRecord, Slo, summarize_requests
from services.cli.main import build_parser
from services.common.settings import REPO_ROOT

SLO = Slo(ttft_ms=500, tpot_ms=50)


def record(ttft: float, tpot: float, tokens: int = 128, error: str | None = None) -> RequestRecord:
    """A request sent at t=10 s, first token `ttft` s later, then one token every `tpot` s."""
    r = RequestRecord("http", 0, 0, 143, tokens, start=10.0, output_tokens=0 if error else tokens, error=error)
    if error is None:
        r.chunk_times = [10.0 + ttft + i * tpot for i in range(tokens)]
        r.end = r.chunk_times[-1]
    return r


def level(concurrency: int, records: list[RequestRecord], wall_s: float) -> dict:
    return {"concurrency": concurrency, **summarize_requests(records, wall_s, SLO)}


def peer(name: str, levels: list[dict]) -> dict:
    return {"name": name, "status": "ok", "reason": "", "levels": levels, "load_avg_before": [0.1, 0.2, 0.3],
            "load_avg_after": [1.0, 0.5, 0.4]}


def test_rows_figures_served_fraction_goodput_and_vllm_ratio() -> None:
    vllm = peer("vLLM server", [level(1, [record(0.02, 0.004)] * 4, wall_s=2.56)])  # 512 tokens in 2.56 s
    sluice = peer("Sluice stack", [level(1, [record(0.6, 0.004), record(0.1, 0.004), record(0.1, 0.06),
                                             record(0, 0, error="HTTP 503: busy")], wall_s=3.84)])
    rows = table_rows([vllm, sluice])
    assert rows[0] == {"peer": "vLLM server", "status": "ok", "concurrency": 1, "tok/s": 200.0,
                       "TTFT p50 ms": 20.0, "TTFT p95 ms": 20.0, "TPOT p50 ms": 4.0, "served": 1.0,
                       "goodput": 1.0, "good req/s": 1.562, "× vLLM tok/s": 1.0}
    stack = rows[1]
    assert stack["tok/s"] == 100.0  # 3 completed × 128 tokens over 3.84 s
    assert stack["served"] == 0.75  # the 503 was sent but not served
    assert stack["goodput"] == 0.25  # only one meets both SLOs: TTFT 600 ms and TPOT 60 ms each miss one
    assert stack["TTFT p50 ms"] == pytest.approx(100.0)
    assert stack["× vLLM tok/s"] == 0.5


def test_skipped_peer_is_one_row_with_its_reason_and_no_ratio_without_vllm() -> None:
    rows = [{"name": "vLLM server", "status": "skipped", "reason": ".venv-vllm/bin/python is missing", "levels": []},
            peer("Triton direct", [level(1, [record(0.02, 0.004)], 1.0), level(16, [record(0.1, 0.01)], 1.0)])]
    table = table_rows(rows)
    assert table[0] == {"peer": "vLLM server", "status": "skipped", "reason": ".venv-vllm/bin/python is missing"}
    assert [r["concurrency"] for r in table[1:]] == [1, 16]
    assert all(r["× vLLM tok/s"] is None for r in table[1:])
    text = markdown_table(rows)
    assert "| vLLM server | skipped: .venv-vllm/bin/python is missing |" in text
    assert "| Triton direct | 16 | 128 | 100 | 100 | 10 | 100% | 100% | 1 | – |" in text


def test_markdown_report_names_the_workload_machine_and_loads() -> None:
    report = {"meta": {"started_utc": "2025-01-01T00:00:00Z", "model_dir": "models/sluice-demo", "prompt_tokens": 143,
                       "output_tokens": 128, "temperature": 1.0, "concurrency": [1], "requests_per_level": [16],
                       "slo": {"ttft_ms": 500.0, "tpot_ms": 50.0}},
              "machine": {"cpu": "Some CPU", "cpus": 2, "platform": "Linux", "vllm": "0.32.0"},
              "peers": [peer("vLLM server", [level(1, [record(0.02, 0.004)], 1.0)])]}
    text = markdown_report(report)
    assert "prompts ≈143 tokens" in text and "Some CPU (2 CPUs)" in text and "vLLM 0.32.0" in text
    assert "vLLM server [0.1, 0.2, 0.3] → [1.0, 0.5, 0.4]" in text
    assert text.count("| vLLM server | 1 |") == 1


def test_requests_per_level_default_and_override() -> None:
    config = PeersConfig(concurrency=(1, 16, 64))
    assert [config.requests_at(c) for c in (1, 16, 64)] == [16, 64, 256]
    assert PeersConfig(requests_per_level=8).requests_at(64) == 8
    with pytest.raises(ValueError):
        PeersConfig(concurrency=(0,))


def test_workload_has_fixed_lengths_and_different_words_per_peer(demo_tokenizer) -> None:
    config = PeersConfig(model_dir=REPO_ROOT / "models" / "sluice-demo", concurrency=(2,), requests_per_level=4)
    vllm = peer_sessions(config, demo_tokenizer, 0, "vLLM server")
    stack = peer_sessions(config, demo_tokenizer, 0, "Sluice stack")
    overhead = template_overhead(demo_tokenizer)
    for sessions in (vllm, stack):
        assert len(sessions) == 4
        for session in sessions:
            (turn,) = session.turns
            assert turn.output_len == 128
            prompt = len(demo_tokenizer.encode_chat([{"role": "user", "content": turn.user}]))
            assert 143 - 3 <= prompt <= 143 and prompt == overhead + len(demo_tokenizer.encode(turn.user))
    assert [s.turns[0].user for s in vllm] != [s.turns[0].user for s in stack]


def test_cli_parses_peers_options() -> None:
    args = build_parser().parse_args(["bench", "peers", "--concurrency", "1,4", "--requests-per-level", "8",
                                      "--skip-vllm", "--results", "/tmp/x"])
    assert args.concurrency == (1, 4) and args.requests_per_level == 8 and args.skip_vllm and not args.skip_stack
    assert Path(args.results) == Path("/tmp/x") and args.model_dir == "models/sluice-demo"
    defaults = build_parser().parse_args(["bench", "peers"])
    assert defaults.concurrency == (1, 16, 64) and defaults.requests_per_level is None


def test_missing_vllm_venv_and_skip_flags_are_skipped_rows(tmp_path: Path) -> None:
    config = PeersConfig()
    row = run_vllm_row(config, None, tmp_path, print, python=tmp_path / "no-venv" / "bin" / "python")  # type: ignore[arg-type]
    assert row["status"] == "skipped" and "make vllm-venv" in str(row["reason"]) and row["levels"] == []
    assert run_vllm_row(PeersConfig(skip_vllm=True), None, tmp_path, print)["reason"] == "--skip-vllm"  # type: ignore[arg-type]
    rows = run_stack_rows(PeersConfig(skip_stack=True), None, tmp_path, print)  # type: ignore[arg-type]
    assert [(r["name"], r["status"]) for r in rows] == [("Triton direct", "skipped"), ("Sluice stack", "skipped")]
