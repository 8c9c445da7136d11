"""The `sluice` command: build steps, the local stack and a chat client."""

from __future__ import annotations

import argparse
import sys


def _cmd_protos(args: argparse.Namespace) -> int:
    from services.cli.protos import generate

    print(f"generated stubs and {generate()}")
    return 0


def _cmd_repo_render(args: argparse.Namespace) -> int:
    from services.common.settings import Settings
    from services.supervisor.repository import render_repository

    settings = Settings.from_env()
    out = render_repository(settings, engine=args.engine, out_dir=args.out)
    print(f"rendered {args.engine} model repository at {out}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from services.supervisor.stack import up

    return up(detach=args.detach)


def _cmd_down(args: argparse.Namespace) -> int:
    from services.supervisor.stack import down

    return down()


def _cmd_status(args: argparse.Namespace) -> int:
    from services.supervisor.stack import status

    return status(as_json=args.json)


def _cmd_scale(args: argparse.Namespace) -> int:
    from services.supervisor.stack import scale

    return scale(orchestrators=args.orchestrators, triton=args.triton)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from services.cli.ingest import ingest

    return ingest(args.paths, args.collection, api_key=args.api_key)


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from services.retrieval.evaluation import run_cli

    return run_cli(k=args.k, collection=args.collection)


def _cmd_chat(args: argparse.Namespace) -> int:
    from services.cli.chat import chat

    return chat(args.message, model=args.model, max_tokens=args.max_tokens, system=args.system,
                temperature=args.temperature, collections=args.collection, api_key=args.api_key)


def _cmd_eval_rag_answers(args: argparse.Namespace) -> int:
    from services.retrieval.rag_answers import run_cli

    return run_cli(model=args.model, collection=args.collection, api_key=args.api_key, verbose=args.verbose)


def _cmd_eval_tools(args: argparse.Namespace) -> int:
    from services.bench.tool_call_eval import run_cli

    return run_cli(args.cases, args.seed, args.model, args.in_process)


def _cmd_bench_engine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.engine_bench import run

    run(Path(args.results), Path(args.model), quick=args.quick, threads=args.threads,
        models=args.models.split(","), with_peers=not args.no_peers, all_peers=args.all_peers,
        peer_dtype=args.peer_dtype, matmul_dtype=None if args.matmul_dtype == "float32" else args.matmul_dtype)
    return 0


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.bench.overhead import run
    from services.common.settings import Settings

    print(json.dumps(run(Settings.from_env(), args.requests, Path(args.results)), indent=2))
    return 0


def _cmd_bench_tenancy(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.bench.tenancy_bench import run

    print(json.dumps(run(Path(args.results), args.requests, args.redis_url or None), indent=2))
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from services.common.settings import Settings
    from services.telemetry.waterfall import main

    return main(Settings.from_env().telemetry_url, args.id, as_json=args.json, limit=args.limit)


def _cmd_bench_tracing(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.bench.tracing import run
    from services.common.settings import Settings
    from services.orchestrator.tenancy.dev_key import local_api_key

    settings = Settings.from_env()
    key = local_api_key(settings)
    if key is None:
        print("sluice: no API key (set SLUICE_API_KEY, or start the stack with `sluice up`)", file=sys.stderr)
        return 1
    report = run(settings, key, Path(args.results), rounds=args.rounds, requests=args.requests,
                 concurrency=args.concurrency, max_tokens=args.max_tokens)
    print(json.dumps({k: v for k, v in report.items() if k != "rounds"}, indent=2))
    return 0


def _cmd_bench_retrieval(args: argparse.Namespace) -> int:
    from services.bench.retrieval_bench import main

    return main(args.sizes, args.queries, args.ingest_documents, args.base, args.results)


def _cmd_bench_served(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.bench.served import run
    from services.common.settings import Settings

    report = run(Settings.from_env(), args.concurrency, args.requests, args.output_tokens, Path(args.results))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_bench_affinity(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.bench.affinity_bench import AffinityConfig, run
    from services.bench.serve_workload import LengthDist
    from services.common.settings import Settings

    settings = Settings.from_env()
    try:
        config = AffinityConfig(
            replicas=args.replicas, prompts=args.prompts, requests_per_prompt=args.requests_per_prompt,
            system_len=args.system_len, prompt_len=LengthDist.parse(args.prompt_len),
            output_len=LengthDist.parse(args.output_len), concurrency=args.concurrency, rounds=args.rounds,
            kv_cache_mb=args.kv_cache_mb, seed=args.seed)
        report = run(config, Path(args.results), settings.model_dir)
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("strategies", "affinity_vs_random")}, indent=2))
    print(f"results in {args.results}/affinity.json", file=sys.stderr)
    return 0


def _cmd_bench_safety(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.safety_bench import run
    from services.common.settings import Settings

    settings = Settings.from_env()
    run(args.address or f"{settings.host}:{settings.safety_port}", args.requests,
        None if args.no_triton else settings.triton_grpc_url, Path(args.results))
    return 0


def _cmd_eval_safety(args: argparse.Namespace) -> int:
    if args.frozen:
        from pathlib import Path

        from services.safety.frozen_eval import main as frozen_main

        sets = ("v1", "v2") if args.set == "all" else (args.set,)
        return frozen_main(args.triton, sets, Path(args.baseline_head) if args.baseline_head else None)
    from services.safety.evaluation import main

    bench_address = args.bench_address
    if args.bench and not bench_address:
        from services.common.settings import Settings

        settings = Settings.from_env()
        bench_address = f"{settings.host}:{settings.safety_port}"
    return main(args.triton, args.verbose, bench_address)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("sluice")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        installed = "unknown"
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice: gRPC-native LLM serving around Triton")
    parser.add_argument("--version", action="version", version=f"sluice {installed}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("protos", help="generate gRPC stubs and Envoy's descriptor set").set_defaults(func=_cmd_protos)

    repo = sub.add_parser("repo", help="Triton model repository")
    repo_sub = repo.add_subparsers(dest="repo_command", required=True)
    render = repo_sub.add_parser("render", help="render config.pbtxt templates into a model repository")
    render.add_argument("--engine", choices=["cpu", "trtllm"], default="cpu",
                        help="cpu: Sluice's CPU engine; trtllm: TensorRT-LLM's backend configs (GPU)")
    render.add_argument("--out", default=None, help="output folder (default: <run dir>/model_repository)")
    render.set_defaults(func=_cmd_repo_render)

    from services.cli import tenancy

    tenancy.register(sub)  # tenants, keys, usage, audit, users, purge
    from services.safety import admin as safety_admin

    safety_admin.register(sub)  # safety policy set|show|reset

    up = sub.add_parser("up", help="start Triton, the orchestrator and Envoy")
    up.add_argument("--detach", action="store_true", help="start in the background and return when ready")
    up.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop a detached stack (idempotent)").set_defaults(func=_cmd_down)
    stack_status = sub.add_parser("status", help="the running stack's endpoints, key file, processes and health")
    stack_status.add_argument("--json", action="store_true", help="print JSON instead of lines")
    stack_status.set_defaults(func=_cmd_status)
    scale = sub.add_parser("scale", help="change the number of orchestrator or Triton replicas of a running stack "
                           "(Envoy keeps running: new replicas join once healthy, removed ones drain first)")
    scale.add_argument("--orchestrators", type=int, default=None, metavar="N", help="orchestrator replicas")
    scale.add_argument("--triton", type=int, default=None, metavar="N",
                       help="Triton replicas (the orchestrators are rolled onto the new set; replica 0 stays)")
    scale.set_defaults(func=_cmd_scale)

    trace = sub.add_parser("trace", help="print a request's trace as a waterfall (from the local OTLP receiver)")
    trace.add_argument("id", nargs="?", default=None,
                       help="request id (x-request-id) or trace id (x-sluice-trace-id); none lists recent traces")
    trace.add_argument("--json", action="store_true", help="the spans as JSON")
    trace.add_argument("--limit", type=int, default=20, help="how many recent traces to list")
    trace.set_defaults(func=_cmd_trace)

    from services.cli.api import API_KEY_HELP

    chat = sub.add_parser("chat", help="send one message through the OpenAI-compatible API and stream the reply")
    chat.add_argument("message", help="the user message")
    chat.add_argument("--model", default=None, help="model id (default: $SLUICE_MODEL_NAME, sluice-demo)")
    chat.add_argument("--max-tokens", type=int, default=128, help="the most tokens to generate (default 128)")
    chat.add_argument("--system", default=None, help="a system prompt")
    chat.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 to 2 (0: greedy)")
    chat.add_argument("--collection", action="append", default=None,
                      help="ground the answer in this collection (repeat for several); prints the citations")
    chat.add_argument("--api-key", default=None, help=API_KEY_HELP)
    chat.set_defaults(func=_cmd_chat)

    ingest = sub.add_parser("ingest", help="ingest .txt/.md/.html/.pdf files and folders into a retrieval "
                            "collection of your tenant (through the API)")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (folders are walked)")
    ingest.add_argument("--collection", required=True,
                        help="collection name: letters, digits, '-', '_', '.' (created if you do not have it)")
    ingest.add_argument("--api-key", default=None, help=API_KEY_HELP + "; its tenant owns the collection")
    ingest.set_defaults(func=_cmd_ingest)
    from services.cli import collections as collections_cli

    collections_cli.register(sub)  # collections list|delete

    evaluate = sub.add_parser("eval", help="evaluations against the running stack")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)
    eval_retrieval = eval_sub.add_parser("retrieval", help="recall@k and MRR of dense, lexical and hybrid search "
                                         "on the corpus in tests/data/retrieval_eval")
    eval_retrieval.add_argument("--k", type=int, default=5, help="passages per question (default 5)")
    eval_retrieval.add_argument("--collection", default="eval_corpus", help="collection the corpus is ingested into")
    eval_retrieval.set_defaults(func=_cmd_eval_retrieval)
    eval_tools = eval_sub.add_parser("tools", help="constrained tool calls with generated tools the model never saw "
                                     "(tool_choice=required): the share of valid calls")
    eval_tools.add_argument("--cases", type=int, default=100, help="requests (default 100)")
    eval_tools.add_argument("--seed", type=int, default=0, help="seed of the generated tools and prompts")
    eval_tools.add_argument("--model", default=None, help="model (default: the stack's model)")
    eval_tools.add_argument("--in-process", default=None, metavar="CHECKPOINT",
                            help="run on the CPU engine in this process with this checkpoint folder (no stack)")
    eval_tools.set_defaults(func=_cmd_eval_tools)
    rag_answers = eval_sub.add_parser("rag-answers", help="grounded answers through the stack: the held-out set in "
                                      "tests/data/rag_answers ingested, questions asked via the API, exact name "
                                      "match, plus questions the documents do not answer")
    rag_answers.add_argument("--model", default=None, help="model (default: the stack's model)")
    rag_answers.add_argument("--collection", default="rag-answers", help="collection the set is ingested into")
    rag_answers.add_argument("--api-key", default=None, help="default: SLUICE_API_KEY, else the local dev key")
    rag_answers.add_argument("--verbose", action="store_true", help="print every question and answer")
    rag_answers.set_defaults(func=_cmd_eval_rag_answers)

    bench = sub.add_parser("bench", help="benchmarks (results as JSON + PNG)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    eng = bench_sub.add_parser("engine", help="the CPU engine: batching modes, prefix reuse, KV waste, peers")
    eng.add_argument("--results", default="results/engine", help="output folder (default: results/engine)")
    eng.add_argument("--model", default="models/sluice-demo", help="the demo checkpoint folder")
    eng.add_argument("--quick", action="store_true", help="fewer requests (< 10 minutes on 2 cores)")
    eng.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    eng.add_argument("--models", default="demo,llama-110m", help="comma-separated: demo, llama-110m")
    eng.add_argument("--no-peers", action="store_true", help="skip Hugging Face and vLLM")
    eng.add_argument("--all-peers", action="store_true",
                     help="with --quick: run the peers for every model, not only the demo checkpoint")
    eng.add_argument("--matmul-dtype", choices=["float32", "bfloat16"], default="float32",
                     help="Sluice's projections and KV cache (activations and attention stay float32)")
    eng.add_argument("--peer-dtype", choices=["float32", "bfloat16"], default="float32",
                     help="the dtype Hugging Face and vLLM load and compute in (default float32)")
    eng.set_defaults(func=_cmd_bench_engine)
    from services.bench import abuse_cli, cost_cli, overload_cli, peers_cli, recovery_cli, serve_cli, soak_cli

    serve_cli.register(bench_sub)  # bench serve: load generator, goodput, platform overhead
    soak_cli.register(bench_sub)  # bench soak: saturation for minutes, memory growth, usage vs tokens streamed
    overload_cli.register(bench_sub)  # bench overload: admission control on vs off at 2x the saturating load
    recovery_cli.register(bench_sub)  # bench recovery: an overload, then moderate load: refused after it ends?
    cost_cli.register(bench_sub)  # bench cost: CPU ms per streamed token for every stack process
    abuse_cli.register(bench_sub)  # bench abuse: a hostile free tenant against an enterprise tenant's latency
    peers_cli.register(bench_sub)  # bench peers: vLLM's OpenAI server, Triton direct and the stack side by side
    from services.bench import guided_cli
    guided_cli.register(bench_sub)  # bench guided: grammar compile time, per-token cost, valid-output rate

    tenancy_bench = bench_sub.add_parser("tenancy", help="time added per request by auth + rate limits + quotas, "
                                         "in-process vs Redis")
    tenancy_bench.add_argument("--requests", type=int, default=2000, help="requests per backend")
    tenancy_bench.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="'' to skip Redis")
    tenancy_bench.add_argument("--results", default="results/tenancy", help="output folder")
    tenancy_bench.set_defaults(func=_cmd_bench_tenancy)

    retrieval_bench = bench_sub.add_parser("retrieval", help="ingestion chunks/s and search p50/p99 at 10k and "
                                           "100k chunks in Milvus Lite (needs `sluice up`)")
    retrieval_bench.add_argument("--sizes", default="10000,100000", help="collection sizes in chunks")
    retrieval_bench.add_argument("--queries", type=int, default=200, help="hybrid queries per size")
    retrieval_bench.add_argument("--ingest-documents", type=int, default=300, help="documents ingested for real")
    retrieval_bench.add_argument("--base", type=int, default=500, help="chunks embedded for real, reused to fill")
    retrieval_bench.add_argument("--results", default="results/retrieval", help="output folder")
    retrieval_bench.set_defaults(func=_cmd_bench_retrieval)

    overhead = bench_sub.add_parser("overhead", help="TTFT added by the orchestrator and Envoy (needs `sluice up`)")
    overhead.add_argument("--requests", type=int, default=50, help="requests per path")
    overhead.add_argument("--results", default="results/overhead", help="output folder")
    overhead.set_defaults(func=_cmd_bench_overhead)

    served = bench_sub.add_parser("served", help="the engine as Triton serves it: concurrent streams to the LLM slot")
    served.add_argument("--concurrency", type=int, default=64, help="concurrent streams")
    served.add_argument("--requests", type=int, default=64, help="requests in all")
    served.add_argument("--output-tokens", type=int, default=128, help="output tokens per request")
    served.add_argument("--results", default="results/served", help="output folder")
    served.set_defaults(func=_cmd_bench_served)

    affinity = bench_sub.add_parser("affinity", help="prefix-affinity vs random routing across Triton replicas it "
                                    "starts itself: prefix-cache hit rate, TTFT, throughput, side by side")
    affinity.add_argument("--replicas", type=int, default=2, help="Triton replicas to start")
    affinity.add_argument("--prompts", type=int, default=8, help="distinct system prompts (default 8)")
    affinity.add_argument("--requests-per-prompt", type=int, default=8, help="per prompt and phase (default 8)")
    affinity.add_argument("--system-len", type=int, default=512, help="system prompt tokens (default 512)")
    affinity.add_argument("--prompt-len", default="32:64", help="user-message tokens: N, LO:HI or normal:MEAN:STD")
    affinity.add_argument("--output-len", default="16", help="output tokens (default 16)")
    affinity.add_argument("--concurrency", type=int, default=8, help="concurrent requests")
    affinity.add_argument("--rounds", type=int, default=4, help="rounds of both strategies, order alternating")
    affinity.add_argument("--kv-cache-mb", type=int, default=20, help="KV-cache budget per replica (default 20)")
    affinity.add_argument("--seed", type=int, default=0, help="random seed of the workload")
    affinity.add_argument("--results", default="results/affinity", help="output folder")
    affinity.set_defaults(func=_cmd_bench_affinity)

    tracing = bench_sub.add_parser("tracing", help="throughput with 100%% trace sampling vs tracing off, "
                                   "interleaved in one run (needs `sluice up`)")
    tracing.add_argument("--rounds", type=int, default=10, help="rounds per mode (default 10)")
    tracing.add_argument("--requests", type=int, default=24, help="requests per round (default 24)")
    tracing.add_argument("--concurrency", type=int, default=8, help="concurrent requests")
    tracing.add_argument("--max-tokens", type=int, default=32, help="output tokens per request")
    tracing.add_argument("--results", default="results/tracing", help="output folder")
    tracing.set_defaults(func=_cmd_bench_tracing)

    safety_bench = bench_sub.add_parser("safety", help="input-check latency and output moderation per token "
                                        "(needs `sluice up`)")
    safety_bench.add_argument("--requests", type=int, default=300, help="requests per measurement")
    safety_bench.add_argument("--address", default=None, help="safety service HOST:PORT (default: the stack's)")
    safety_bench.add_argument("--no-triton", action="store_true", help="skip timing the classifier alone in Triton")
    safety_bench.add_argument("--results", default="results/safety", help="output folder")
    safety_bench.set_defaults(func=_cmd_bench_safety)

    safety = eval_sub.add_parser("safety", help="safety detectors: P/R/F1 per category, benign FPR, latency")
    safety.add_argument("--triton", default=None, help="score with Triton's safety_classifier at HOST:PORT "
                        "(default: the same scorer in-process)")
    safety.add_argument("--bench", action="store_true", help="also measure latency against the running stack's "
                        "safety service")
    safety.add_argument("--bench-address", default=None, help="safety service HOST:PORT for --bench")
    safety.add_argument("--verbose", action="store_true", help="list the tuning half's errors")
    safety.add_argument("--frozen", action="store_true", help="the frozen hand-written test sets "
                        "(tests/data/safety_unseen, tests/data/safety_unseen_v2): v1 rules and the served "
                        "classifier side by side")
    safety.add_argument("--set", choices=("v1", "v2", "all"), default="all", help="which frozen set (--frozen)")
    safety.add_argument("--baseline-head", default=None, help="with --frozen: also score with the head in this "
                        "folder (head.safetensors + head.json), e.g. an earlier version's weights")
    safety.set_defaults(func=_cmd_eval_safety)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
