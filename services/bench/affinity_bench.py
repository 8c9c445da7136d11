"""`sluice bench affinity`: what prefix-affinity routing across Triton replicas buys over a plain random balancer.

The benchmark starts its own Triton replicas (SLUICE_TRITON_REPLICAS-style, on free ports, with a KV-cache budget
per replica) and sends them the same kind of traffic twice per round — once routed by the orchestrator's replica
routing with `strategy: affinity`, once with `strategy: random` — through the orchestrator's own client
(services/orchestrator/replicated_llm.py). Traffic: `prompts` distinct system prompts of `system_len` tokens (the
shared-prefix workload of `sluice bench serve`, one per prompt), each followed by different user messages, mixed in
random order, `concurrency` requests in flight.

Each phase gets its own words, so no phase is served from a prefix another phase cached; rounds alternate which
strategy goes first. The prefix-cache hit rate comes from the replicas' engine metrics (hit tokens / queried tokens,
counted per phase); TTFT and throughput from the client. The KV budget matters: when each replica's cache holds
about its share of the system prompts but not all of them, random routing makes every replica cache every prompt
and evict them in turn, while affinity gives each prompt one home.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from engine.tokenizer import ChatTokenizer
from services.bench.serve import Runner
from services.bench.serve_metrics import RequestRecord, Slo, summarize_requests
from services.bench.serve_targets import TritonTarget
from services.bench.serve_workload import LengthDist, Session, build_sessions
from services.common.settings import Settings
from services.orchestrator.replicas import STRATEGIES, ReplicaPolicy
from services.orchestrator.replicated_llm import ReplicatedLLM
from services.supervisor.processes import PortInUseError, free_port
from services.supervisor.replicas import TritonReplicas

PREFIX_METRICS = ("sluice_engine_prefix_hit_tokens_total", "sluice_engine_prefix_queried_tokens_total")


@dataclass(frozen=True, slots=True)
class AffinityConfig:
    replicas: int = 2
    prompts: int = 8  # distinct system prompts
    requests_per_prompt: int = 8  # per phase
    system_len: int = 512  # tokens per system prompt: 32 KV blocks of 16
    prompt_len: LengthDist = field(default_factory=lambda: LengthDist.parse("32:64"))  # the user message
    output_len: LengthDist = field(default_factory=lambda: LengthDist.parse("16"))
    concurrency: int = 8
    rounds: int = 4  # each round runs both strategies, the order alternating
    kv_cache_mb: int = 20  # per replica: ~210 blocks, room for about half of 8 × 32-block system prompts
    seed: int = 0
    slo: Slo = field(default_factory=Slo)

    def __post_init__(self) -> None:
        if self.replicas < 2:
            raise ValueError("affinity needs at least 2 replicas to choose between")
        if min(self.prompts, self.requests_per_prompt, self.system_len, self.concurrency, self.rounds,
               self.kv_cache_mb) < 1:
            raise ValueError("prompts, requests per prompt, system length, concurrency, rounds and the KV budget "
                             "must be positive")


def replica_metrics(settings: Settings) -> list[dict[str, float]]:
    """Each replica's prefix-cache counters for the LLM slot."""
    counters = []
    for index in range(settings.triton_replicas):
        port = settings.triton_replica_ports(index)[2]
        text = httpx.get(f"http://{settings.host}:{port}/metrics", timeout=10).text
        counters.append({name: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                   if line.startswith(name) and 'model="tensorrt_llm"' in line)
                         for name in PREFIX_METRICS})
    return counters


def mixed_sessions(config: AffinityConfig, tokenizer: ChatTokenizer, variant: str) -> list[Session]:
    """`requests_per_prompt` one-turn sessions for each of `prompts` system prompts, shuffled together."""
    sessions = []
    for prompt in range(config.prompts):
        sessions += build_sessions("shared-prefix", config.requests_per_prompt, tokenizer,
                                   prompt_len=config.prompt_len, output_len=config.output_len,
                                   system_len=config.system_len, seed=config.seed + prompt,
                                   variant=f"{variant}/prompt-{prompt}")
    random.Random(f"{config.seed}/{variant}").shuffle(sessions)
    return [Session(i, s.system, s.turns) for i, s in enumerate(sessions)]


@dataclass
class Phase:
    strategy: str
    records: list[RequestRecord]
    wall_s: float
    hit_tokens: float
    queried_tokens: float
    per_replica_requests: list[int]


async def run_phase(settings: Settings, config: AffinityConfig, tokenizer: ChatTokenizer, strategy: str,
                    variant: str) -> Phase:
    llm = ReplicatedLLM(settings.triton_grpc_urls, policy=ReplicaPolicy(strategy=strategy))
    runner = Runner(TritonTarget(settings.triton_grpc_url, tokenizer, llm=llm), tokenizer)
    sessions = mixed_sessions(config, tokenizer, variant)
    before = await asyncio.to_thread(replica_metrics, settings)
    try:
        started = time.perf_counter()
        records = await runner.closed_loop(sessions, config.concurrency)
        wall = time.perf_counter() - started
    finally:
        await llm.close()
    after = await asyncio.to_thread(replica_metrics, settings)
    hits, queried = (sum(a[name] - b[name] for a, b in zip(after, before, strict=True)) for name in PREFIX_METRICS)
    return Phase(strategy, records, wall, hits, queried, [r.started for r in llm.selector.replicas])


async def warm_up(settings: Settings, tokenizer: ChatTokenizer) -> None:
    """First-call costs on every replica, in words no measured request uses."""
    for url in settings.triton_grpc_urls:
        target = TritonTarget(url, tokenizer)
        try:
            await target.send([{"role": "user", "content": "warm up the engine please"}], 4,
                              RequestRecord("warm-up", -1, 0, 0, 4))
        finally:
            await target.close()


async def run_rounds(settings: Settings, config: AffinityConfig, tokenizer: ChatTokenizer) -> list[Phase]:
    await warm_up(settings, tokenizer)
    phases = []
    for round_index in range(config.rounds):
        order = STRATEGIES if round_index % 2 == 0 else tuple(reversed(STRATEGIES))
        for strategy in order:
            phases.append(await run_phase(settings, config, tokenizer, strategy, f"round-{round_index}/{strategy}"))
    return phases


def figures(phases: list[Phase], slo: Slo) -> dict[str, object]:
    """One strategy's phases pooled: hit rate, client-side latency and throughput, requests per replica."""
    records = [record for phase in phases for record in phase.records]
    summary = summarize_requests(records, sum(phase.wall_s for phase in phases), slo)
    hits, queried = sum(p.hit_tokens for p in phases), sum(p.queried_tokens for p in phases)
    return {"prefix_hit_rate": round(hits / queried, 4) if queried else None,
            "prefix_hit_tokens": hits, "prefix_queried_tokens": queried,
            "ttft_ms": {q: summary["ttft_ms"][q] for q in ("p50", "p95", "p99", "mean")},
            "request_throughput": summary["request_throughput"],
            "output_token_throughput": summary["output_token_throughput"],
            "e2e_ms_p50": summary["e2e_ms"]["p50"], "requests": summary["requests"], "errors": summary["errors"],
            "requests_per_replica": [sum(counts) for counts in zip(*(p.per_replica_requests for p in phases),
                                                                   strict=True)]}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else round(numerator / denominator, 3)


def compare(by_strategy: dict[str, dict]) -> dict[str, float | None]:
    affinity, rand = by_strategy["affinity"], by_strategy["random"]
    return {"prefix_hit_rate_gain": ratio(affinity["prefix_hit_rate"], rand["prefix_hit_rate"]),
            "ttft_p50_speedup": ratio(rand["ttft_ms"]["p50"], affinity["ttft_ms"]["p50"]),
            "ttft_p95_speedup": ratio(rand["ttft_ms"]["p95"], affinity["ttft_ms"]["p95"]),
            "request_throughput_ratio": ratio(affinity["request_throughput"], rand["request_throughput"])}


def bench_settings(config: AffinityConfig, run_dir: Path, model_dir: Path) -> Settings:
    """Free ports for every replica (replica i's are replica 0's + 100), a small KV budget, no tracing."""
    ports = [free_port() for _ in range(3)]
    return Settings(triton_http_port=ports[0], triton_grpc_port=ports[1], triton_metrics_port=ports[2],
                    triton_replicas=config.replicas, kv_cache_mb=config.kv_cache_mb, run_dir=run_dir,
                    model_dir=model_dir, trace_sample_rate=0.0)


def run(config: AffinityConfig, results_dir: Path, model_dir: Path) -> dict[str, object]:
    """Starts the replicas, runs every round, stops them; writes `affinity.json` into `results_dir`."""
    tokenizer = ChatTokenizer.from_pretrained(model_dir)
    started_utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="sluice-affinity-") as run_dir:
        for attempt in range(5):  # another process may hold one of the derived ports
            settings = bench_settings(config, Path(run_dir), model_dir)
            try:
                replicas = TritonReplicas(settings).start()
                break
            except PortInUseError:
                if attempt == 4:
                    raise
        started = time.perf_counter()
        try:
            phases = asyncio.run(run_rounds(settings, config, tokenizer))
        finally:
            replicas.stop()
    by_strategy = {strategy: figures([p for p in phases if p.strategy == strategy], config.slo)
                   for strategy in STRATEGIES}
    meta = {**{k: v for k, v in asdict(config).items() if k not in ("prompt_len", "output_len", "slo")},
            "prompt_len": str(config.prompt_len), "output_len": str(config.output_len),
            "model_dir": str(model_dir), "started_utc": started_utc,
            "measured_s": round(time.perf_counter() - started, 1),
            "phase_order": [p.strategy for p in phases]}
    report = {"meta": meta, "strategies": by_strategy, "affinity_vs_random": compare(by_strategy),
              "phases": [{"strategy": p.strategy, "prefix_hit_rate": ratio(p.hit_tokens, p.queried_tokens),
                          "wall_s": round(p.wall_s, 2), "requests_per_replica": p.per_replica_requests}
                         for p in phases]}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "affinity.json").write_text(json.dumps(report, indent=2))
    return report
