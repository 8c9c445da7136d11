"""The `sluice bench guided` subcommand: guided decoding's compile time, per-token cost and output validity, in
process on a checkpoint (imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import os


def register(bench_sub: argparse._SubParsersAction) -> None:
    guided = bench_sub.add_parser(
        "guided", help="guided decoding in the CPU engine: schema compile time (first, cached), time per token with "
        "and without a grammar at c=1 and c=16, parse+validate rate of sampled outputs over varied JSON schemas")
    guided.add_argument("--model-dir", default=None, help="checkpoint (default: the demo model)")
    guided.add_argument("--per-schema", type=int, default=20, help="sampled outputs per schema (12 schemas)")
    guided.add_argument("--max-tokens", type=int, default=64, help="tokens per request in the per-token runs")
    guided.add_argument("--results", default="results/guided", help="output folder (default results/guided)")
    guided.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.guided_bench import run
    from services.common.settings import REPO_ROOT

    model_dir = Path(args.model_dir) if args.model_dir else REPO_ROOT / "models" / "sluice-demo"
    report = run(model_dir, Path(args.results), args.per_schema, args.max_tokens)
    summary = {key: report[key] for key in ("compile", "per_token")}
    summary["validity"] = {k: v for k, v in report["validity"].items() if k != "examples"}
    summary["load_average"] = [report["load_average_before"], report["load_average_after"], os.getloadavg()]
    print(json.dumps(summary, indent=2))
    return 0
