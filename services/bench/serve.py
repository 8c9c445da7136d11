"""`sluice bench serve`: load against a running stack — through Envoy's OpenAI HTTP/SSE facade, the native gRPC
API, or straight to Triton — at fixed concurrencies (closed loop) or Poisson arrival rates (open loop), one level
after another. Each level reports request and token throughput, TTFT / TPOT / ITL / end-to-end latency
p50/p95/p99 and goodput at the SLOs (services/bench/serve_metrics.py); the run writes `serve.json` and two charts,
latency vs load and goodput vs load.

`--overhead` runs the same workload through Envoy + orchestrator (`http`) and straight to Triton (`triton`) in one
run, in alternating rounds so that noise on the machine falls on both, and reports what the platform adds: TTFT p50
(target ≤ 10 ms) and the streaming token rate as a share of Triton's (target ≥ 90%).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from engine.tokenizer import ChatTokenizer
from services.bench.chart import write_serve_charts
from services.bench.serve_metrics import RequestRecord, Slo, summarize_requests
from services.bench.serve_targets import GrpcTarget, HttpTarget, Target, TritonTarget
from services.bench.serve_workload import LengthDist, Session, build_sessions, messages_for
from services.common.settings import Settings

OVERHEAD_TARGETS = ("triton", "http")
ADDED_TTFT_TARGET_MS = 10.0
TOKEN_RATE_TARGET = 0.90


@dataclass(frozen=True, slots=True)
class ServeConfig:
    target: str = "http"
    workload: str = "random"
    concurrency: tuple[int, ...] = (1, 4, 16)  # closed loop, one level each; ignored when `rates` is set
    rates: tuple[float, ...] = ()  # Poisson arrivals, sessions per second, one level each
    sessions: int = 32  # per level
    prompt_len: LengthDist = field(default_factory=lambda: LengthDist.parse("32:128"))
    output_len: LengthDist = field(default_factory=lambda: LengthDist.parse("32"))
    system_len: int = 256
    turns: int = 3
    model: str | None = None
    slo: Slo = field(default_factory=Slo)
    seed: int = 0
    warmup: int = 2  # requests per target before measuring
    overhead: bool = False
    rounds: int = 4  # overhead: alternating rounds per level
    api_key: str | None = None
    grpc_address: str | None = None  # default: Envoy's port

    @property
    def loads(self) -> list[tuple[str, float]]:
        if self.rates:
            return [("rate", float(r)) for r in self.rates]
        return [("concurrency", float(c)) for c in self.concurrency]


class Runner:
    """Sends sessions through one target and collects a RequestRecord per turn."""

    def __init__(self, target: Target, tokenizer: ChatTokenizer) -> None:
        self.target = target
        self.tokenizer = tokenizer

    async def session(self, session: Session) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        replies: list[str] = []
        for index, turn in enumerate(session.turns):
            messages = messages_for(session, index, replies)
            record = RequestRecord(self.target.name, session.index, index, len(self.tokenizer.encode_chat(messages)),
                                   turn.output_len)
            try:
                await self.target.send(messages, turn.output_len, record)
            except Exception as exc:  # a refused connection, a timeout: the request failed, the run goes on
                record.error = f"{type(exc).__name__}: {str(exc)[:160]}"
            records.append(record)
            if not record.ok:
                break  # the rest of the conversation depends on this reply
            replies.append(record.text)
        return records

    async def closed_loop(self, sessions: Sequence[Session], concurrency: int) -> list[RequestRecord]:
        """`concurrency` sessions in flight; each worker starts the next session as soon as its last one ends."""
        pending = list(reversed(sessions))
        records: list[RequestRecord] = []

        async def worker() -> None:
            while pending:
                records.extend(await self.session(pending.pop()))

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        return records

    async def poisson(self, sessions: Sequence[Session], rate: float, rng: random.Random) -> list[RequestRecord]:
        """Sessions start at Poisson arrival times (`rate` per second), whatever is still in flight."""
        loop = asyncio.get_running_loop()
        start, due, tasks = loop.time(), 0.0, []
        for session in sessions:
            due += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, start + due - loop.time()))
            tasks.append(asyncio.create_task(self.session(session)))
        return [record for records in await asyncio.gather(*tasks) for record in records]

    async def level(self, sessions: Sequence[Session], load: tuple[str, float],
                    rng: random.Random) -> tuple[list[RequestRecord], float]:
        started = time.perf_counter()
        if load[0] == "rate":
            records = await self.poisson(sessions, load[1], rng)
        else:
            records = await self.closed_loop(sessions, int(load[1]))
        return records, time.perf_counter() - started


def make_target(name: str, settings: Settings, config: ServeConfig, tokenizer: ChatTokenizer) -> Target:
    model = config.model or settings.model_name
    if name == "http":
        return HttpTarget(settings.public_base_url, model, config.api_key)
    if name == "grpc":
        return GrpcTarget(config.grpc_address or f"{settings.host}:{settings.http_port}", model, config.api_key)
    if name == "triton":
        return TritonTarget(settings.triton_grpc_url, tokenizer)
    raise ValueError(f"unknown target {name!r}")


def _load_entry(load: tuple[str, float]) -> dict[str, float]:
    return {load[0]: load[1] if load[0] == "rate" else int(load[1])}


async def _warm_up(runner: Runner, sessions: Sequence[Session], count: int) -> None:
    """First-call costs (connections, the first prefill) out of the way, in words no measured request uses."""
    for session in sessions[:count]:
        await runner.session(Session(-1, session.system, session.turns[:1]))


async def run_levels(settings: Settings, config: ServeConfig, tokenizer: ChatTokenizer,
                     context_window: int | None) -> list[dict[str, object]]:
    """Each load level in turn through `config.target`, with fresh sessions (same seed per level)."""
    target = make_target(config.target, settings, config, tokenizer)
    runner = Runner(target, tokenizer)
    levels = []
    try:
        await _warm_up(runner, _sessions(config, tokenizer, context_window, config.seed, "warm-up"), config.warmup)
        for i, load in enumerate(config.loads):
            sessions = _sessions(config, tokenizer, context_window, config.seed + i)
            records, wall = await runner.level(sessions, load, random.Random(config.seed + i))
            levels.append({"load": _load_entry(load), **summarize_requests(records, wall, config.slo)})
    finally:
        await target.close()
    return levels


async def run_overhead(settings: Settings, config: ServeConfig, tokenizer: ChatTokenizer,
                       context_window: int | None) -> list[dict[str, object]]:
    """Per load level: the same sessions split into rounds, each round sent to Triton and through the platform in
    turn (the order alternating), so both paths see the same lengths, arrivals and machine noise. Each path gets
    its own words for those lengths: a prompt the other path just sent would be a prefix-cache hit."""
    runners = {name: Runner(make_target(name, settings, config, tokenizer), tokenizer) for name in OVERHEAD_TARGETS}
    levels = []
    try:
        for name, runner in runners.items():
            warm = _sessions(config, tokenizer, context_window, config.seed, f"warm-up/{name}")
            await _warm_up(runner, warm, config.warmup)
        for i, load in enumerate(config.loads):
            sessions = {name: _sessions(config, tokenizer, context_window, config.seed + i, name) for name in runners}
            collected: dict[str, list[RequestRecord]] = {name: [] for name in runners}
            walls = dict.fromkeys(runners, 0.0)
            rounds = max(1, min(config.rounds, config.sessions))
            for r in range(rounds):
                order = OVERHEAD_TARGETS if r % 2 == 0 else tuple(reversed(OVERHEAD_TARGETS))
                for name in order:
                    share = sessions[name][r::rounds]
                    records, wall = await runners[name].level(share, load, random.Random(config.seed + 31 * r))
                    collected[name] += records
                    walls[name] += wall
            per_target = {name: summarize_requests(collected[name], walls[name], config.slo) for name in runners}
            levels.append({"load": _load_entry(load), **overhead_figures(per_target), "targets": per_target})
    finally:
        for runner in runners.values():
            await runner.target.close()
    return levels


def overhead_figures(per_target: dict[str, dict]) -> dict[str, object]:
    """Added TTFT p50 (platform − Triton) and the platform's per-stream token rate as a share of Triton's."""
    direct, platform = per_target["triton"], per_target["http"]
    ttft_direct, ttft_platform = direct["ttft_ms"]["p50"], platform["ttft_ms"]["p50"]
    rate_direct, rate_platform = direct["stream_tokens_per_s_p50"], platform["stream_tokens_per_s_p50"]
    added = None if ttft_direct is None or ttft_platform is None else round(ttft_platform - ttft_direct, 3)
    ratio = None if not rate_direct or rate_platform is None else round(rate_platform / rate_direct, 4)
    throughput = (None if not direct["output_token_throughput"] else
                  round(platform["output_token_throughput"] / direct["output_token_throughput"], 4))
    return {"added_ttft_p50_ms": added, "token_rate_ratio": ratio, "output_throughput_ratio": throughput,
            "meets_targets": {"added_ttft_p50_le_10ms": added is not None and added <= ADDED_TTFT_TARGET_MS,
                              "token_rate_ratio_ge_0_9": ratio is not None and ratio >= TOKEN_RATE_TARGET}}


def _sessions(config: ServeConfig, tokenizer: ChatTokenizer, context_window: int | None, seed: int,
              variant: str = "") -> list[Session]:
    return build_sessions(config.workload, config.sessions, tokenizer, prompt_len=config.prompt_len,
                          output_len=config.output_len, system_len=config.system_len, turns=config.turns, seed=seed,
                          context_window=context_window, variant=variant)


def _context_window(model_dir: Path) -> int | None:
    try:
        return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])
    except (OSError, KeyError, ValueError):
        return None


def run(settings: Settings, config: ServeConfig, results_dir: Path) -> dict[str, object]:
    """Runs the benchmark, writes `serve.json` and the charts into `results_dir`, returns the report."""
    tokenizer = ChatTokenizer.from_pretrained(settings.model_dir)
    context_window = _context_window(settings.model_dir)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if config.overhead:
        levels = asyncio.run(run_overhead(settings, config, tokenizer, context_window))
    else:
        levels = asyncio.run(run_levels(settings, config, tokenizer, context_window))
    meta = {**{k: v for k, v in asdict(config).items() if k not in ("api_key", "slo", "prompt_len", "output_len")},
            "prompt_len": str(config.prompt_len), "output_len": str(config.output_len),
            "targets": list(OVERHEAD_TARGETS) if config.overhead else [config.target],
            "model": config.model or settings.model_name, "endpoint": settings.public_base_url,
            "triton": settings.triton_grpc_url, "started_utc": started,
            "slo": {"ttft_ms": config.slo.ttft_ms, "tpot_ms": config.slo.tpot_ms}}
    report: dict[str, object] = {"meta": meta, "levels": levels}
    results_dir.mkdir(parents=True, exist_ok=True)
    report["charts"] = write_serve_charts(report, results_dir)
    (results_dir / "serve.json").write_text(json.dumps(report, indent=2))
    return report
