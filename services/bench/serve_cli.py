"""The `sluice bench serve` subcommand: its arguments, and turning them into a ServeConfig (imports stay lazy so
`sluice --help` does not load the benchmark)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _numbers(kind: type, text: str) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def register(bench_sub: argparse._SubParsersAction) -> None:
    serve = bench_sub.add_parser(
        "serve", help="load against the running stack (HTTP/SSE, native gRPC or Triton): throughput, TTFT/TPOT/ITL, "
        "goodput at SLOs; --overhead compares the platform with Triton")
    serve.add_argument("--target", choices=["http", "grpc", "triton"], default="http",
                       help="http: Envoy's OpenAI facade (SSE); grpc: native sluice.v1.Chat; triton: tensorrt_llm")
    load = serve.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=lambda t: _numbers(int, t), default=(1, 4, 16),
                      help="closed-loop levels, comma-separated (default 1,4,16)")
    load.add_argument("--rate", type=lambda t: _numbers(float, t), default=(),
                      help="open-loop Poisson arrival rates in sessions/s, comma-separated")
    serve.add_argument("--sessions", type=int, default=32, help="sessions per load level (default 32)")
    serve.add_argument("--workload", choices=["random", "shared-prefix", "multi-turn"], default="random",
                       help="prompt mix: random, shared system prefixes, or growing conversations")
    serve.add_argument("--prompt-len", default="32:128", help="user-message tokens: N, LO:HI or normal:MEAN:STD")
    serve.add_argument("--output-len", default="32", help="output tokens, exact: N, LO:HI or normal:MEAN:STD")
    serve.add_argument("--system-len", type=int, default=256, help="shared-prefix: system prompt tokens")
    serve.add_argument("--turns", type=int, default=3, help="multi-turn: turns per session")
    serve.add_argument("--model", default=None, help="public model name (default: the stack's model)")
    serve.add_argument("--slo-ttft-ms", type=float, default=None, help="TTFT SLO for goodput (default 500)")
    serve.add_argument("--slo-tpot-ms", type=float, default=None, help="TPOT SLO for goodput (default 50)")
    serve.add_argument("--overhead", action="store_true",
                       help="the same workload through Envoy+orchestrator and straight to Triton, in one run")
    serve.add_argument("--rounds", type=int, default=4, help="--overhead: alternating rounds per level")
    serve.add_argument("--seed", type=int, default=0, help="random seed of the workload")
    serve.add_argument("--api-key", default=None,
                       help="API key for http/grpc (default: $SLUICE_API_KEY, else the local stack's dev key)")
    serve.add_argument("--grpc-address", default=None, help="native gRPC HOST:PORT (default: Envoy's port)")
    serve.add_argument("--results", default="results/serve", help="output folder (default results/serve)")
    serve.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.serve import ServeConfig, run
    from services.bench.serve_metrics import Slo
    from services.bench.serve_workload import LengthDist
    from services.common.settings import Settings
    from services.orchestrator.tenancy.dev_key import local_api_key

    settings = Settings.from_env()
    api_key = args.api_key or os.environ.get("SLUICE_API_KEY") or local_api_key(settings)
    if api_key is None and (args.target != "triton" or args.overhead):
        print("sluice: no API key (--api-key, SLUICE_API_KEY, or start the stack with `sluice up`)", file=sys.stderr)
        return 1
    try:
        config = ServeConfig(
            target=args.target, workload=args.workload, concurrency=args.concurrency, rates=args.rate,
            sessions=args.sessions, prompt_len=LengthDist.parse(args.prompt_len),
            output_len=LengthDist.parse(args.output_len), system_len=args.system_len, turns=args.turns,
            model=args.model, slo=Slo(args.slo_ttft_ms or settings.slo_ttft_ms,
                                      args.slo_tpot_ms or settings.slo_tpot_ms),
            seed=args.seed, overhead=args.overhead, rounds=args.rounds, api_key=api_key,
            grpc_address=args.grpc_address)
        report = run(settings, config, Path(args.results))
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(brief(report), indent=2))
    print(f"results in {args.results}/serve.json", file=sys.stderr)
    return 0


def brief(report: dict) -> dict:
    """The headline figures of each level (the JSON file has them all)."""
    keep = ("request_throughput", "output_token_throughput", "errors")
    levels = []
    for level in report["levels"]:
        figures = level.get("targets", {"": level})
        row: dict = {"load": level["load"]}
        for name, f in figures.items():
            key = f"{name}." if name else ""
            row.update({f"{key}{k}": f[k] for k in keep})
            row.update({f"{key}ttft_ms": {q: f["ttft_ms"][q] for q in ("p50", "p99")},
                        f"{key}tpot_ms": {q: f["tpot_ms"][q] for q in ("p50", "p99")},
                        f"{key}goodput": f["goodput"]["fraction"]})
        for k in ("added_ttft_p50_ms", "token_rate_ratio", "output_throughput_ratio"):
            if k in level:
                row[k] = level[k]
        levels.append(row)
    return {"levels": levels, "charts": report.get("charts")}
