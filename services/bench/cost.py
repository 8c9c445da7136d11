"""`sluice bench cost`: platform CPU per streamed token. The same streaming workload (≈143-token prompts, exactly
`output_len` tokens each via `min_tokens`) goes through Envoy's OpenAI HTTP/SSE facade, the native gRPC API and
straight to Triton's LLM slot, at each concurrency; around every (path, concurrency) phase the CPU time of every
stack process is read from /proc, so the report says what each process spent per streamed token, what the platform
(everything but tritonserver and the LLM slot's stubs) spent, and how even the stream was (SSE chunk gap p50 next
to the engine's per-token time). Needs a running stack (`sluice up`)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.tokenizer import ChatTokenizer
from services.bench.chart import _pyplot
from services.bench.cpu_cost import cpu_delta, cpu_snapshot, is_engine, per_token
from services.bench.serve_metrics import RequestRecord
from services.bench.serve_targets import GrpcTarget, HttpTarget, Target, TritonTarget
from services.bench.serve_workload import LengthDist, build_sessions, messages_for
from services.bench.soak import stack_pids
from services.common.settings import Settings

PATHS = ("http", "grpc", "triton")


@dataclass(frozen=True, slots=True)
class CostConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests_per_stream: int = 3  # requests per level = concurrency × this
    prompt_len: int = 130  # user-message tokens: ≈143 with the chat template
    output_len: int = 128
    paths: tuple[str, ...] = PATHS
    api_key: str | None = None
    label: str = ""  # "before" / "after": names the output file


def _target(name: str, settings: Settings, tokenizer: ChatTokenizer, api_key: str | None) -> Target:
    if name == "http":
        return HttpTarget(settings.public_base_url, settings.model_name, api_key)
    if name == "grpc":
        return GrpcTarget(f"{settings.host}:{settings.http_port}", settings.model_name, api_key)
    return TritonTarget(settings.triton_grpc_url, tokenizer)


async def _drive(target: Target, prompts: list[list[dict[str, str]]], concurrency: int, output_len: int,
                 prompt_tokens: int) -> list[RequestRecord]:
    queue = list(enumerate(prompts))
    records: list[RequestRecord] = []

    async def worker() -> None:
        while queue:
            index, messages = queue.pop(0)
            record = RequestRecord(target.name, index, 0, prompt_tokens, output_len)
            try:
                await target.send(messages, output_len, record)
            except Exception as exc:  # a transport error counts against the path, it does not end the run
                record.error = f"{type(exc).__name__}: {exc}"[:200]
            records.append(record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


def _gap_p50_ms(records: list[RequestRecord]) -> float | None:
    gaps = [g for r in records if r.ok for g in r.itls]
    return round(statistics.median(gaps) * 1000, 2) if gaps else None


def _token_time_ms(records: list[RequestRecord]) -> float | None:
    """Per-token time of the stream: (last chunk − first chunk) / (tokens − 1), median over requests."""
    values = [r.tpot for r in records if r.ok and r.tpot is not None]
    return round(statistics.median(values) * 1000, 2) if values else None


async def _phase(name: str, settings: Settings, tokenizer: ChatTokenizer, config: CostConfig, concurrency: int,
                 prompts: list[list[dict[str, str]]], prompt_tokens: int) -> dict:
    target = _target(name, settings, tokenizer, config.api_key)
    try:
        await _drive(target, prompts[:1], 1, 8, prompt_tokens)  # warm the connection and the path
        pids = stack_pids(settings)
        load_before = os.getloadavg()
        before = cpu_snapshot(pids)
        started = time.perf_counter()
        records = await _drive(target, prompts[:concurrency * config.requests_per_stream], concurrency,
                               config.output_len, prompt_tokens)
        wall = time.perf_counter() - started
        spent = cpu_delta(before, cpu_snapshot(pids))
    finally:
        await target.close()
    tokens = sum(r.output_tokens for r in records if r.ok)
    chunks = sum(len(r.chunk_times) for r in records if r.ok)
    return {"path": name, "concurrency": concurrency, "requests": len(records),
            "ok": sum(r.ok for r in records), "errors": sorted({r.error for r in records if r.error})[:3],
            "tokens": tokens, "chunks": chunks, "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1) if wall else None,
            "chunk_gap_p50_ms": _gap_p50_ms(records), "token_time_ms": _token_time_ms(records),
            "cpu_ms": spent, "cpu_ms_per_token": per_token(spent, tokens),
            "load_avg": [round(x, 2) for x in load_before]}


async def _run(settings: Settings, config: CostConfig) -> dict:
    if not stack_pids(settings):
        raise ValueError(f"no stack is running for {settings.run_dir} (start one with `sluice up`)")
    tokenizer = ChatTokenizer.from_pretrained(settings.model_dir)
    most = max(config.concurrency) * config.requests_per_stream
    sessions = build_sessions("random", most, tokenizer, prompt_len=LengthDist.parse(str(config.prompt_len)),
                              output_len=LengthDist.parse(str(config.output_len)), variant="cost")
    prompts = [messages_for(s, 0, []) for s in sessions]
    prompt_tokens = round(statistics.mean(len(tokenizer.encode_chat(p)) for p in prompts))
    phases = []
    for concurrency in config.concurrency:
        for name in config.paths:
            # a different slice of prompts for each phase would change nothing here: sampling at temperature 1
            # means the response cache never answers
            phases.append(await _phase(name, settings, tokenizer, config, concurrency, prompts, prompt_tokens))
    return {"meta": {"started_utc": datetime.now(UTC).isoformat(timespec="seconds"), "label": config.label,
                     "prompt_tokens_mean": prompt_tokens, "output_len": config.output_len,
                     "requests_per_stream": config.requests_per_stream, "cpus": os.cpu_count()},
            "phases": phases}


def run(settings: Settings, config: CostConfig, results_dir: Path) -> dict:
    report = asyncio.run(_run(settings, config))
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"cost-{config.label}" if config.label else "cost"
    (results_dir / f"{stem}.json").write_text(json.dumps(report, indent=2))
    report["chart"] = write_cost_chart(report, results_dir / f"{stem}.png")
    return report


def write_cost_chart(report: dict, path: Path) -> str | None:
    """Stacked bars: CPU ms per streamed token by process, one bar per (path, concurrency). Returns the path or
    why no chart was written."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    phases = report["phases"]
    # platform processes at the bottom, so their stack reads against the goal line; the engine on top
    names = sorted({n for p in phases for n in p["cpu_ms"]}, key=lambda n: (is_engine(n), n))
    colours = plt.get_cmap("tab20").colors
    labels = [f"{p['path']}\nc={p['concurrency']}" for p in phases]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(phases)), 5))
    bottoms = [0.0] * len(phases)
    for k, name in enumerate(names):
        values = [p["cpu_ms_per_token"].get(name, 0.0) for p in phases]
        ax.bar(range(len(phases)), values, bottom=bottoms, label=name, color=colours[k % len(colours)],
               hatch="//" if is_engine(name) else None)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for i, p in enumerate(phases):
        ax.annotate(f"platform {p['cpu_ms_per_token'].get('platform', 0):.2f}", (i, bottoms[i]), ha="center",
                    va="bottom", fontsize=7)
    ax.axhline(0.25, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(phases)), labels, fontsize=7)
    ax.set_ylabel("CPU ms per streamed token")
    ax.set_title(f"sluice bench cost {report['meta']['label']} — {report['meta']['started_utc']} "
                 f"(hatched: engine; dashed: platform goal 0.25 ms)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
