"""`sluice bench peers`: vLLM's OpenAI server and Sluice, one after the other, on the same checkpoint and workload.

Peers (rows), each measured at every concurrency level in a closed loop:
- "vLLM server": vLLM's OpenAI server (its own virtualenv), HTTP/SSE;
- "Triton direct": the Sluice engine through Triton's `tensorrt_llm` model, as the orchestrator calls it;
- "Sluice stack": HTTP/SSE through Envoy and the orchestrator with an enterprise key.
vLLM runs alone and is stopped before a private Sluice stack (free ports, a temporary run folder) starts, so the two
never share the CPU. Every request has a fixed-length prompt (≈`prompt_tokens` with the chat template) and is forced
to `output_tokens` tokens (min_tokens = max_tokens) at temperature 1. Each peer gets the same lengths in its own
words (a `variant` of the workload), so no peer's prefix cache is warmed by another's prompts.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from engine.tokenizer import ChatTokenizer
from services.bench.machine import machine_info
from services.bench.peers_report import markdown_report, write_chart
from services.bench.serve import Runner
from services.bench.serve_metrics import Slo, summarize_requests
from services.bench.serve_targets import TEMPERATURE, HttpTarget, Target, TritonTarget
from services.bench.serve_workload import LengthDist, Session, build_sessions
from services.bench.vllm_server import VLLM_PYTHON, VllmServer, vllm_version
from services.common.settings import REPO_ROOT, Settings
from services.supervisor.processes import free_port

VLLM, TRITON, STACK = "vLLM server", "Triton direct", "Sluice stack"
QUIET_LOAD = 1.0  # a 1-minute load average above this before a peer: the figures are suspect


@dataclass(frozen=True, slots=True)
class PeersConfig:
    model_dir: Path = field(default_factory=lambda: REPO_ROOT / "models" / "sluice-demo")
    concurrency: tuple[int, ...] = (1, 16, 64)
    requests_per_level: int | None = None  # default: 4 × concurrency, at least 16
    prompt_tokens: int = 143  # the whole chat prompt, template included
    output_tokens: int = 128
    skip_vllm: bool = False
    skip_stack: bool = False
    vllm_dtype: str = "float32"  # what vLLM's server computes in (Sluice's engine: SLUICE_ENGINE_MATMUL_DTYPE)
    warmup: int = 2  # requests per peer before measuring
    seed: int = 0
    slo: Slo = field(default_factory=Slo)

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be positive")
        if self.requests_per_level is not None and self.requests_per_level < 1:
            raise ValueError("--requests-per-level must be positive")
        if self.output_tokens < 1:
            raise ValueError("output tokens must be positive")

    def requests_at(self, concurrency: int) -> int:
        return self.requests_per_level or max(16, 4 * concurrency)


def template_overhead(tokenizer: ChatTokenizer) -> int:
    """Tokens the chat template adds around one user message."""
    text = "river stone cloud lamp"
    return len(tokenizer.encode_chat([{"role": "user", "content": text}])) - len(tokenizer.encode(text))


def peer_sessions(config: PeersConfig, tokenizer: ChatTokenizer, level: int, variant: str) -> list[Session]:
    """The sessions of one level (index `level`) for one peer: same lengths for every peer, words of its own."""
    user_tokens = config.prompt_tokens - template_overhead(tokenizer)
    if user_tokens < 1:
        raise ValueError(f"a {config.prompt_tokens}-token prompt leaves no room for a user message")
    return build_sessions("random", config.requests_at(config.concurrency[level]), tokenizer,
                          prompt_len=LengthDist("fixed", user_tokens),
                          output_len=LengthDist("fixed", config.output_tokens), seed=config.seed + level,
                          context_window=_context_window(config.model_dir), variant=variant)


async def measure(name: str, make_target: Callable[[], Target], config: PeersConfig, tokenizer: ChatTokenizer,
                  log: Callable[[str], None]) -> list[dict[str, object]]:
    """Warm-up requests, then each concurrency level in a closed loop; one summary per level. The target is made
    inside the event loop (a gRPC channel belongs to the loop it was made in)."""
    target = make_target()
    runner = Runner(target, tokenizer)
    levels: list[dict[str, object]] = []
    try:
        warm = peer_sessions(config, tokenizer, 0, f"warm-up/{name}")[:config.warmup]
        for session in warm:
            await runner.session(session)
        for i, concurrency in enumerate(config.concurrency):
            sessions = peer_sessions(config, tokenizer, i, name)
            records, wall = await runner.level(sessions, ("concurrency", float(concurrency)), random.Random(i))
            summary = summarize_requests(records, wall, config.slo)
            log(f"  {name} c={concurrency}: {summary['completed']}/{summary['requests']} done, "
                f"{summary['output_token_throughput']} tok/s, TTFT p50 {summary['ttft_ms']['p50']} ms")
            levels.append({"concurrency": concurrency, **summary})
    finally:
        await target.close()
    return levels


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _context_window(model_dir: Path) -> int | None:
    try:
        return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])
    except (OSError, KeyError, ValueError):
        return None


def _row(name: str, status: str, reason: str = "", **extra: object) -> dict[str, object]:
    return {"name": name, "status": status, "reason": reason, "levels": [], **extra}


def run_vllm_row(config: PeersConfig, tokenizer: ChatTokenizer, log_dir: Path, log: Callable[[str], None],
                 python: Path = VLLM_PYTHON) -> dict[str, object]:
    """vLLM's row; its server's log is kept as `log_dir`/vllm.log."""
    if config.skip_vllm:
        return _row(VLLM, "skipped", "--skip-vllm")
    if not python.exists():
        return _row(VLLM, "skipped", f"{python} is missing (run `make vllm-venv`)")
    before = _load_avg()
    server = VllmServer(config.model_dir, log_dir / "vllm.log", python=python, dtype=config.vllm_dtype)
    log(f"vLLM: starting its OpenAI server on port {server.port} (takes ~2 min)")
    try:
        startup_s = server.start()
        log(f"vLLM: ready after {startup_s:.0f} s")
        levels = asyncio.run(measure(VLLM, lambda: HttpTarget(server.base_url, server.model, api_key=None), config,
                                     tokenizer, log))
    except Exception as exc:  # the row fails, the other peers still run
        return _row(VLLM, "failed", f"{type(exc).__name__}: {str(exc)[:2000]}", load_avg_before=before,
                    load_avg_after=_load_avg())
    finally:
        server.stop()
    return {**_row(VLLM, "ok", load_avg_before=before, load_avg_after=_load_avg(), startup_s=round(startup_s, 1),
                   command=server.command()), "levels": levels}


def stack_settings(model_dir: Path, run_dir: Path) -> Settings:
    """Settings.from_env (as `sluice up` reads them) on free ports, in `run_dir`, with its own SQLite database and
    in-process rate limits, serving `model_dir` as the default model."""
    base = Settings.from_env()
    ports = iter(free_port(base.host) for _ in range(13))
    return replace(base, http_port=next(ports), envoy_admin_port=next(ports), orchestrator_port=next(ports),
                   triton_http_port=next(ports), triton_grpc_port=next(ports), triton_metrics_port=next(ports),
                   retrieval_port=next(ports), safety_port=next(ports), otlp_grpc_port=next(ports),
                   otlp_http_port=next(ports), orchestrator_metrics_port=next(ports),
                   safety_metrics_port=next(ports), retrieval_metrics_port=next(ports), triton_replicas=1,
                   run_dir=run_dir, model_dir=model_dir, database_url=None, redis_url=None, milvus_uri=None,
                   otlp_endpoint=None)


def run_stack_rows(config: PeersConfig, tokenizer: ChatTokenizer, work_dir: Path,
                   log: Callable[[str], None]) -> list[dict[str, object]]:
    """Triton direct, then the whole stack, against one private stack."""
    if config.skip_stack:
        return [_row(TRITON, "skipped", "--skip-stack"), _row(STACK, "skipped", "--skip-stack")]
    from services.orchestrator.tenancy.store import issue_key
    from services.supervisor.stack import Stack

    settings = stack_settings(config.model_dir, work_dir / "run")
    stack = Stack(settings, shutdown_grace=5.0)
    rows: list[dict[str, object]] = []
    log(f"Sluice: starting a private stack in {settings.run_dir}")
    try:
        stack.start()
        key = issue_key(settings.db_url, "bench-peers", tier="enterprise", name="bench peers")
        for name, make_target in ((TRITON, lambda: TritonTarget(settings.triton_grpc_url, tokenizer)),
                                  (STACK, lambda: HttpTarget(settings.public_base_url, settings.model_name, key))):
            before = _load_avg()
            try:
                levels = asyncio.run(measure(name, make_target, config, tokenizer, log))
            except Exception as exc:
                rows.append(_row(name, "failed", f"{type(exc).__name__}: {str(exc)[:2000]}", load_avg_before=before,
                                 load_avg_after=_load_avg()))
                continue
            rows.append({**_row(name, "ok", load_avg_before=before, load_avg_after=_load_avg()), "levels": levels})
    except Exception as exc:  # the stack did not start
        reason = f"{type(exc).__name__}: {str(exc)[:2000]}"
        done = {row["name"] for row in rows}
        rows += [_row(name, "failed", reason) for name in (TRITON, STACK) if name not in done]
    finally:
        stack.stop()
    return rows


def run(config: PeersConfig, results_dir: Path, log: Callable[[str], None] = print) -> dict[str, object]:
    """Runs the peers one after the other; writes peers.json, peers.md and peers.png into `results_dir`."""
    tokenizer = ChatTokenizer.from_pretrained(config.model_dir)
    peer_sessions(config, tokenizer, 0, "check")  # a prompt that cannot fit fails here, before any server starts
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load = _load_avg()
    if load[0] > QUIET_LOAD:
        log(f"warning: load average {load[0]} before the run: the machine is not quiet, the figures will suffer")
    results_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sluice-peers-") as tmp:
        work_dir = Path(tmp)
        peers = [run_vllm_row(config, tokenizer, results_dir, log), *run_stack_rows(config, tokenizer, work_dir, log)]
    meta = {"started_utc": started, "duration_s": round(time.monotonic() - began, 1),
            "model_dir": str(config.model_dir), "prompt_tokens": config.prompt_tokens,
            "output_tokens": config.output_tokens, "temperature": TEMPERATURE,
            "concurrency": list(config.concurrency),
            "requests_per_level": [config.requests_at(c) for c in config.concurrency],
            "warmup": config.warmup, "seed": config.seed, "vllm_dtype": config.vllm_dtype,
            "sluice_matmul_dtype": Settings.from_env().engine_matmul_dtype,
            "slo": {"ttft_ms": config.slo.ttft_ms, "tpot_ms": config.slo.tpot_ms}, "load_avg_start": load}
    report: dict[str, object] = {"meta": meta, "machine": {**machine_info(), "vllm": vllm_version()}, "peers": peers}
    skipped = write_chart(report, results_dir / "peers.png")
    report["chart"] = {"skipped": skipped} if skipped else "peers.png"
    (results_dir / "peers.json").write_text(json.dumps(report, indent=2))
    (results_dir / "peers.md").write_text(markdown_report(report))
    return report
