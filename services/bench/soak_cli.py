"""The `sluice bench soak` subcommand: its arguments, and the run (imports stay lazy so `sluice --help` does not
load the benchmark)."""

from __future__ import annotations

import argparse
import json
import sys


def register(bench_sub: argparse._SubParsersAction) -> None:
    soak = bench_sub.add_parser(
        "soak", help="the running stack at saturation for N minutes: error rate, memory growth of every process, "
        "usage records vs tokens streamed")
    soak.add_argument("--minutes", type=float, default=10.0, help="how long to hold the load (default 10)")
    soak.add_argument("--target", choices=["http", "grpc"], default="http",
                      help="http: Envoy's OpenAI facade (SSE); grpc: native sluice.v1.Chat through Envoy")
    soak.add_argument("--concurrency", type=int, default=16, help="streams kept in flight (default 16)")
    soak.add_argument("--prompt-len", default="32:128", help="user-message tokens: N, LO:HI or normal:MEAN:STD")
    soak.add_argument("--output-len", default="64", help="output tokens: N, LO:HI or normal:MEAN:STD")
    soak.add_argument("--sample-s", type=float, default=5.0, help="seconds between memory samples (default 5)")
    soak.add_argument("--settle-s", type=float, default=60.0,
                      help="memory slopes leave out the first seconds of the run (default 60)")
    soak.add_argument("--seed", type=int, default=0, help="random seed of the workload")
    soak.add_argument("--results", default="results/soak", help="output folder (default results/soak)")
    soak.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.serve_workload import LengthDist
    from services.bench.soak import SoakConfig, run
    from services.common.settings import Settings

    try:
        config = SoakConfig(minutes=args.minutes, target=args.target, concurrency=args.concurrency,
                            prompt_len=LengthDist.parse(args.prompt_len), output_len=LengthDist.parse(args.output_len),
                            sample_s=args.sample_s, settle_s=args.settle_s, seed=args.seed)
        report = run(Settings.from_env(), config, Path(args.results))
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    print(f"results in {args.results}/soak.json", file=sys.stderr)
    return 0
