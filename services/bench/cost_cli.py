"""The `sluice bench cost` subcommand: CPU ms per streamed token for every stack process (imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from services.bench.serve_cli import _numbers


def register(bench_sub: argparse._SubParsersAction) -> None:
    cost = bench_sub.add_parser(
        "cost", help="CPU ms per streamed token for every stack process, through HTTP/SSE, native gRPC and Triton "
        "direct (needs `sluice up`)")
    cost.add_argument("--concurrency", type=lambda t: _numbers(int, t), default=(1, 4, 16),
                      help="concurrent streams, comma-separated (default 1,4,16)")
    cost.add_argument("--requests-per-stream", type=int, default=3, help="requests per level = concurrency × this")
    cost.add_argument("--paths", default="http,grpc,triton", help="any of http,grpc,triton")
    cost.add_argument("--output-len", type=int, default=128, help="output tokens per request")
    cost.add_argument("--label", default="", help="names the output: results/cost/cost-LABEL.json")
    cost.add_argument("--api-key", default=None, help="default: $SLUICE_API_KEY, else the local stack's dev key")
    cost.add_argument("--results", default="results/cost", help="output folder (default results/cost)")
    cost.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.cost import PATHS, CostConfig, run
    from services.common.settings import Settings
    from services.orchestrator.tenancy.dev_key import local_api_key

    settings = Settings.from_env()
    paths = tuple(p for p in args.paths.split(",") if p)
    if not paths or any(p not in PATHS for p in paths):
        print(f"sluice: --paths takes {','.join(PATHS)}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("SLUICE_API_KEY") or local_api_key(settings)
    config = CostConfig(concurrency=args.concurrency, requests_per_stream=args.requests_per_stream,
                        output_len=args.output_len, paths=paths, api_key=api_key, label=args.label)
    try:
        report = run(settings, config, Path(args.results))
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    rows = [{k: p[k] for k in ("path", "concurrency", "ok", "tokens", "tokens_per_s", "chunk_gap_p50_ms",
                               "token_time_ms", "load_avg")} | {"cpu_ms_per_token": p["cpu_ms_per_token"]}
            for p in report["phases"]]
    print(json.dumps(rows, indent=1))
    print(f"chart: {report['chart']}", file=sys.stderr)
    return 0
