"""`sluice bench overload` against the real stack on a tiny configuration (a couple of seconds per phase), through
the CLI: the two front ends start and stop, every phase runs, and the report has its figures. No timing target is
asserted here — on a shared CI machine they mean nothing; the benchmark run itself reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.settings import Settings

pytestmark = pytest.mark.timeout(480)  # starts two orchestrator + Envoy pairs of its own


def test_overload_bench_runs_end_to_end(stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli.main import main
    from services.supervisor.stack import settings_env

    for name, value in settings_env(stack).items():
        if name.startswith("SLUICE_"):
            monkeypatch.setenv(name, value)
    code = main(["bench", "overload", "--start-rate", "2", "--max-steps", "2", "--step-s", "1.5", "--phase-s", "1.5",
                 "--rounds", "1", "--prompt-len", "8:16", "--output-len", "4", "--results", str(tmp_path)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "overload.json").read_text())
    assert printed["saturating_rate"] == report["saturation"]["saturating_rate"] > 0
    assert 1 <= len(report["saturation"]["steps"]) <= 2
    overload = report["overload"]
    assert overload["rate"] == pytest.approx(2 * report["saturation"]["saturating_rate"], rel=1e-3)
    assert [phase["mode"] for phase in overload["phases"]] == ["on", "off"]
    for mode in ("on", "off"):
        figures = overload["modes"][mode]
        assert figures["sent"] == figures["admitted"] + figures["shed"] > 0
        assert figures["failed_after_admission"] == 0, figures["serve"]["error_kinds"]
        assert sum(t["sent"] for t in figures["per_tier"].values()) == figures["sent"]
        assert all(t["sent"] > 0 and 0 <= t["shed_fraction"] <= 1 for t in figures["per_tier"].values())
        assert figures["retry_after_s"]["count"] == figures["shed"]  # every refusal says when to come back
    assert overload["modes"]["off"]["shed_overloaded"] == 0  # admission off never answers `overloaded`
    assert set(report["orchestrator_shed_counter"]["off"]) == set()
    on_shed = report["orchestrator_shed_counter"]["on"]
    assert sum(v for k, v in on_shed.items() if k.endswith("/rejected")) == overload["modes"]["on"]["shed_overloaded"]
    assert set(overload["meets_targets"]) == {"admitted_goodput_ge_0_9", "goodput_ratio_ge_1_5"}
    for log in (tmp_path / "front-ends" / "logs").glob("orchestrator-*.log"):
        assert "Traceback" not in log.read_text(), log.name
