"""`sluice bench soak`: the running stack held at saturation for N minutes. Reports the error rate, the resident
memory of every stack process over the run (start, end, peak, slope), and whether the usage records add up: their
completion tokens against the tokens the client streamed and against the engine's own output-token counter.

The run uses a fresh tenant (and key) in the stack's database, so its usage records are exactly the soak's
requests. Process ids come from the supervisor's state file (<run dir>/stack.json), read again at every sample so a
restarted process is followed. Writes `soak.json` into the results folder.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from engine.tokenizer import ChatTokenizer
from services.bench.proc_memory import MemorySampler
from services.bench.serve import Runner
from services.bench.serve_metrics import RequestRecord, Slo, summarize_requests
from services.bench.serve_targets import GrpcTarget, HttpTarget, Target
from services.bench.serve_workload import LengthDist, Session, build_sessions
from services.common.settings import Settings
from services.orchestrator.tenancy.store import issue_key
from services.orchestrator.tenancy.usage import usage_rows_of
from services.supervisor.stack import STATE_FILE

ENGINE_TOKENS = "sluice_engine_output_tokens_total{"
SESSION_POOL = 256  # distinct prompts, cycled
MAX_BACKOFF_S = 5.0


def shed(record: RequestRecord) -> bool:
    """Refused up front by admission control or a rate limit, with a Retry-After: load shedding, not a failure."""
    return record.http_status in (429, 503) and record.retry_after_s is not None


@dataclass(frozen=True, slots=True)
class SoakConfig:
    minutes: float = 10.0
    target: str = "http"  # http (Envoy, SSE) or grpc (native, through Envoy)
    concurrency: int = 16  # closed loop: enough to keep the CPU engine's batch full
    prompt_len: LengthDist = field(default_factory=lambda: LengthDist.parse("32:128"))
    output_len: LengthDist = field(default_factory=lambda: LengthDist.parse("64"))
    sample_s: float = 5.0
    settle_s: float = 60.0  # memory slope over the run after this (pools and caches fill under the first load)
    seed: int = 0


def stack_pids(settings: Settings) -> dict[str, int]:
    """The stack's processes by name, from the state file, plus `whole_stack`: the supervisor, whose tree is every
    process of the stack (memory is measured per process tree). Empty when no stack is running."""
    try:
        state = json.loads((settings.run_dir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    pids = {name: int(pid) for name, pid in (state.get("processes") or {}).items() if pid}
    if state.get("pid"):
        pids["whole_stack"] = int(state["pid"])
    return pids


def engine_output_tokens(settings: Settings) -> float | None:
    try:
        text = httpx.get(f"http://{settings.host}:{settings.triton_metrics_port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(ENGINE_TOKENS))


def new_soak_key(settings: Settings) -> tuple[str, str]:
    """A fresh enterprise-tier tenant and key in the stack's database: (tenant, key)."""
    tenant = f"soak-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    return tenant, issue_key(settings.db_url, tenant, tier="enterprise", name="soak")


def usage_rows(settings: Settings, tenant: str) -> list:
    return usage_rows_of(settings.db_url, tenant)


async def drive(runner: Runner, sessions: list[Session], concurrency: int, seconds: float,
                sampler: MemorySampler, sample_s: float) -> tuple[list[RequestRecord], float]:
    """`concurrency` workers send sessions back to back until `seconds` have passed; memory is sampled meanwhile.
    A request shed by admission control (429/503 with Retry-After) makes its worker wait as told, as a well-behaved
    client does: the stack is held at what it admits, not flooded with instant retries."""
    records: list[RequestRecord] = []
    pool = itertools.cycle(sessions)
    started = time.monotonic()
    deadline = started + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            sent = await runner.session(next(pool))
            records.extend(sent)
            if sent and shed(sent[-1]):
                await asyncio.sleep(min(sent[-1].retry_after_s or 1.0, MAX_BACKOFF_S, deadline - time.monotonic()))

    async def sample() -> None:
        while True:
            await asyncio.to_thread(sampler.sample)
            await asyncio.sleep(sample_s)

    sampling = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        sampling.cancel()
    await asyncio.to_thread(sampler.sample)  # the end point
    return records, time.monotonic() - started


def usage_check(records: list[RequestRecord], rows: list, engine_tokens: float | None) -> dict[str, object]:
    """Usage records against what the client streamed and what the engine counted."""
    ok = [r for r in records if r.ok]
    ok_rows = [row for row in rows if row.status == "ok"]
    streamed = sum(r.output_tokens for r in ok)
    recorded_ok = sum(row.completion_tokens for row in ok_rows)
    recorded_all = sum(row.completion_tokens for row in rows)
    # Asked for exactly expected_tokens; an answer the output guard stopped is short by design, and counted apart.
    filtered = sum(1 for r in ok if r.finish_reason == "content_filter")
    short = sum(1 for r in ok if r.output_tokens != r.expected_tokens and r.finish_reason != "content_filter")
    return {
        "requests_sent": len(records), "usage_records": len(rows), "ok_requests": len(ok), "ok_records": len(ok_rows),
        "client_streamed_tokens": streamed, "usage_completion_tokens_ok": recorded_ok,
        "usage_completion_tokens_all": recorded_all,
        "engine_output_tokens": None if engine_tokens is None else int(engine_tokens),
        "requests_with_unexpected_length": short,
        "stopped_by_output_guard": filtered,
        "records_match_requests": len(rows) == len(records),
        "usage_matches_client": recorded_ok == streamed and len(ok_rows) == len(ok),
        "usage_matches_engine": engine_tokens is not None and recorded_all == int(engine_tokens),
    }


def make_target(settings: Settings, config: SoakConfig, api_key: str) -> Target:
    if config.target == "http":
        return HttpTarget(settings.public_base_url, settings.model_name, api_key)
    if config.target == "grpc":
        return GrpcTarget(f"{settings.host}:{settings.http_port}", settings.model_name, api_key)
    raise ValueError(f"unknown soak target {config.target!r} (http or grpc)")


def run(settings: Settings, config: SoakConfig, results_dir: Path) -> dict[str, object]:
    pids = stack_pids(settings)
    if not pids:
        raise ValueError(f"no running stack found ({settings.run_dir / STATE_FILE}); start one with `sluice up`")
    tokenizer = ChatTokenizer.from_pretrained(settings.model_dir)
    sessions = build_sessions("random", SESSION_POOL, tokenizer, prompt_len=config.prompt_len,
                              output_len=config.output_len, turns=1, seed=config.seed, variant="soak")
    tenant, api_key = new_soak_key(settings)
    sampler = MemorySampler(lambda: stack_pids(settings) or pids)
    engine_before = engine_output_tokens(settings)
    started_utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def soak() -> tuple[list[RequestRecord], float]:
        target = make_target(settings, config, api_key)
        try:
            return await drive(Runner(target, tokenizer), sessions, config.concurrency, config.minutes * 60,
                               sampler, config.sample_s)
        finally:
            await target.close()

    records, wall = asyncio.run(soak())
    rows = usage_rows(settings, tenant)
    deadline = time.monotonic() + 30  # records are written as each request ends: give the last ones a moment
    while len(rows) < len(records) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = usage_rows(settings, tenant)
    engine_after = engine_output_tokens(settings)
    triton_restarted = "triton" in sampler.series and len(sampler.series["triton"].pids) > 1  # its counter reset
    engine_tokens = (None if engine_before is None or engine_after is None or triton_restarted
                     else engine_after - engine_before)
    load = summarize_requests(records, wall, Slo(settings.slo_ttft_ms, settings.slo_tpot_ms))
    shed_count = sum(1 for r in records if not r.ok and shed(r))
    failed = load["errors"] - shed_count
    report: dict[str, object] = {
        "meta": {"started_utc": started_utc, "minutes": config.minutes, "target": config.target,
                 "concurrency": config.concurrency, "prompt_len": str(config.prompt_len),
                 "output_len": str(config.output_len), "sample_s": config.sample_s, "settle_s": config.settle_s,
                 "tenant": tenant, "endpoint": settings.public_base_url},
        # failures other than load shedding (streams cut, 5xx without Retry-After, transport errors)
        "error_rate": round(failed / load["requests"], 5) if load["requests"] else None,
        "shed_rate": round(shed_count / load["requests"], 5) if load["requests"] else None,
        "load": {k: load[k] for k in ("requests", "completed", "errors", "error_kinds", "wall_s",
                                      "request_throughput", "output_token_throughput", "ttft_ms", "tpot_ms",
                                      "e2e_ms", "goodput")},
        "memory": sampler.summary(skip_s=min(config.settle_s, config.minutes * 60 / 2)),
        "usage": usage_check(records, rows, engine_tokens),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "soak.json").write_text(json.dumps(report, indent=2))
    return report
