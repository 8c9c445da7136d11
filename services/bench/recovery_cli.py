"""The `sluice bench recovery` subcommand: its arguments, and the run (imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import sys


def register(bench_sub: argparse._SubParsersAction) -> None:
    recovery = bench_sub.add_parser(
        "recovery", help="an overload, then moderate load at once: is anything refused after the overload ends?")
    recovery.add_argument("--overload-s", type=float, default=10.0, help="seconds of overload arrivals (default 10)")
    recovery.add_argument("--overload-streams", type=int, default=64, help="concurrent streams during the overload")
    recovery.add_argument("--after-streams", type=int, default=4, help="concurrent streams after it (default 4)")
    recovery.add_argument("--after-requests", type=int, default=48, help="requests after it (default 48)")
    recovery.add_argument("--output-len", type=int, default=128, help="output tokens per request (default 128)")
    recovery.add_argument("--seed", type=int, default=0, help="random seed of the prompts")
    recovery.add_argument("--results", default="results/admission", help="output folder (default results/admission)")
    recovery.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.recovery import RecoveryConfig, run
    from services.common.settings import Settings

    config = RecoveryConfig(overload_s=args.overload_s, overload_streams=args.overload_streams,
                            after_streams=args.after_streams, after_requests=args.after_requests,
                            output_len=args.output_len, seed=args.seed)
    try:
        report = run(Settings.from_env(), config)
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    out = Path(args.results) / f"recovery-c{config.overload_streams}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "requests"}, indent=2))
    print(f"results in {out}", file=sys.stderr)
    return 0
