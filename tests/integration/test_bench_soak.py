"""`sluice bench soak` for ten seconds on a stack of its own (the real benchmark runs for minutes): the code path
stays alive, and on a healthy stack it reports no errors, a memory series per process, and usage records that equal
the tokens streamed and the engine's own count."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bench.serve_workload import LengthDist
from services.bench.soak import SoakConfig, run
from tests.own_stack import supervised_stack


@pytest.mark.timeout(300)
def test_short_soak_reports_errors_memory_and_matching_usage(tmp_path: Path) -> None:
    with supervised_stack(tmp_path / "stack") as own:
        own.stack.write_state(ready=True)  # what `sluice up` writes: the soak finds the processes there
        config = SoakConfig(minutes=10 / 60, concurrency=4, prompt_len=LengthDist.parse("16:32"),
                            output_len=LengthDist.parse("16"), sample_s=1.0, settle_s=0.0)
        report = run(own.settings, config, tmp_path / "results")
    assert (tmp_path / "results" / "soak.json").exists()
    assert report["error_rate"] == 0.0 and report["shed_rate"] == 0.0 and report["load"]["completed"] > 0
    memory = report["memory"]
    assert {"whole_stack", "triton", "orchestrator", "envoy", "safety", "retrieval", "telemetry"} <= set(memory)
    assert all(m["samples"] >= 3 and m["end_mb"] > 0 for m in memory.values())
    usage = report["usage"]
    assert usage["records_match_requests"] and usage["usage_matches_client"] and usage["usage_matches_engine"], usage
    assert usage["requests_with_unexpected_length"] == 0
