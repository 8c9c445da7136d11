"""The `sluice bench overload` subcommand (imports stay lazy so `sluice --help` does not load the benchmark)."""

from __future__ import annotations

import argparse
import json
import sys


def register(bench_sub: argparse._SubParsersAction) -> None:
    overload = bench_sub.add_parser(
        "overload", help="admission control on vs off at 2x the saturating load, mixed tiers, in one run (needs "
        "`sluice up`): admitted goodput, total goodput ratio, shed per tier, Retry-After")
    overload.add_argument("--model", default=None, help="public model name (default: the stack's model)")
    overload.add_argument("--start-rate", type=float, default=1.0, help="first saturation step, requests/s")
    overload.add_argument("--rate-factor", type=float, default=1.5, help="each saturation step multiplies the rate")
    overload.add_argument("--max-steps", type=int, default=7, help="most load steps while finding saturation")
    overload.add_argument("--step-s", type=float, default=10.0, help="seconds of arrivals per saturation step")
    overload.add_argument("--saturating-rate", type=float, default=None, help="skip the search: use this rate")
    overload.add_argument("--overload-factor", type=float, default=2.0, help="offered load as a multiple of saturation")
    overload.add_argument("--phase-s", type=float, default=30.0, help="seconds of arrivals per on/off phase")
    overload.add_argument("--rounds", type=int, default=2, help="on/off pairs, ABBA order")
    overload.add_argument("--prompt-len", default="16:48", help="user-message tokens: N, LO:HI or normal:MEAN:STD")
    overload.add_argument("--output-len", default="16", help="output tokens: N, LO:HI or normal:MEAN:STD")
    overload.add_argument("--slo-ttft-ms", type=float, default=None, help="TTFT SLO (default: the stack's)")
    overload.add_argument("--slo-tpot-ms", type=float, default=None, help="TPOT SLO (default: the stack's)")
    overload.add_argument("--seed", type=int, default=0, help="random seed of the workload")
    overload.add_argument("--results", default="results/overload", help="output folder (default results/overload)")
    overload.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.overload import OverloadConfig, run
    from services.bench.serve_metrics import Slo
    from services.bench.serve_workload import LengthDist
    from services.common.settings import Settings

    settings = Settings.from_env()
    try:
        config = OverloadConfig(
            model=args.model, start_rate=args.start_rate, rate_factor=args.rate_factor, max_steps=args.max_steps,
            step_s=args.step_s, saturating_rate=args.saturating_rate, overload_factor=args.overload_factor,
            phase_s=args.phase_s, rounds=args.rounds, prompt_len=LengthDist.parse(args.prompt_len),
            output_len=LengthDist.parse(args.output_len), seed=args.seed,
            slo=Slo(args.slo_ttft_ms or settings.slo_ttft_ms, args.slo_tpot_ms or settings.slo_tpot_ms))
        report = run(settings, config, Path(args.results))
    except (ValueError, RuntimeError) as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(brief(report), indent=2))
    print(f"results in {args.results}/overload.json", file=sys.stderr)
    return 0


def brief(report: dict) -> dict:
    """The headline figures (the JSON file has them all)."""
    overload = report["overload"]
    modes = {mode: {k: figures[k] for k in ("sent", "admitted", "shed", "good", "admitted_goodput", "goodput_per_s")}
             | {"shed_fraction": {tier: t["shed_fraction"] for tier, t in figures["per_tier"].items()},
                "retry_after_s": {k: figures["retry_after_s"][k] for k in ("count", "p50", "p95", "max")}}
             for mode, figures in overload["modes"].items()}
    return {"saturating_rate": report["saturation"]["saturating_rate"],
            "saturation_found": report["saturation"]["found"],
            "steps": [{k: s[k] for k in ("rate", "kept_up", "pace", "request_throughput", "goodput_fraction")}
                      for s in report["saturation"]["steps"]],
            "overload_rate": overload["rate"], "modes": modes, "goodput_ratio_on_off": overload["goodput_ratio_on_off"],
            "meets_targets": overload["meets_targets"]}
