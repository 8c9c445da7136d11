"""The `sluice bench peers` subcommand: vLLM's OpenAI server, Triton direct and the Sluice stack side by side
(imports stay lazy so `sluice --help` does not load the benchmark)."""

from __future__ import annotations

import argparse
import sys

from services.bench.serve_cli import _numbers


def register(bench_sub: argparse._SubParsersAction) -> None:
    peers = bench_sub.add_parser(
        "peers", help="vLLM's OpenAI server, then a private Sluice stack (Triton direct and HTTP/SSE through Envoy), "
        "same checkpoint and workload: tok/s, TTFT, TPOT, goodput (run on a quiet machine; starts its own servers)")
    peers.add_argument("--model-dir", default="models/sluice-demo", help="the checkpoint every peer serves")
    peers.add_argument("--concurrency", type=lambda t: _numbers(int, t), default=(1, 16, 64),
                       help="closed-loop levels, comma-separated (default 1,16,64)")
    peers.add_argument("--requests-per-level", type=int, default=None,
                       help="requests per level (default 4 × concurrency, at least 16)")
    peers.add_argument("--prompt-tokens", type=int, default=143, help="prompt length, chat template included")
    peers.add_argument("--output-tokens", type=int, default=128, help="output length, forced (min = max tokens)")
    peers.add_argument("--skip-vllm", action="store_true", help="leave out the vLLM row")
    peers.add_argument("--skip-stack", action="store_true", help="leave out the Triton direct and Sluice stack rows")
    peers.add_argument("--vllm-dtype", choices=["float32", "bfloat16"], default="float32",
                       help="vLLM's dtype (Sluice's engine: SLUICE_ENGINE_MATMUL_DTYPE)")
    peers.add_argument("--results", default="results/peers", help="output folder (default results/peers)")
    peers.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.peers_bench import PeersConfig, run
    from services.bench.peers_report import markdown_table

    model_dir = Path(args.model_dir).resolve()
    if not (model_dir / "config.json").exists():
        print(f"sluice: {model_dir} is not a checkpoint (no config.json)", file=sys.stderr)
        return 2
    try:
        config = PeersConfig(model_dir=model_dir, concurrency=args.concurrency,
                             requests_per_level=args.requests_per_level, prompt_tokens=args.prompt_tokens,
                             output_tokens=args.output_tokens, skip_vllm=args.skip_vllm, skip_stack=args.skip_stack,
                             vllm_dtype=args.vllm_dtype)
        report = run(config, Path(args.results), log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(report["peers"]))
    chart = report["chart"]
    print(f"results: {Path(args.results) / 'peers.json'}, peers.md; chart: "
          f"{chart if isinstance(chart, str) else 'skipped, ' + chart['skipped']}", file=sys.stderr)
    failed = [row["name"] for row in report["peers"] if row["status"] == "failed"]
    return 1 if failed else 0
