"""`sluice bench recovery`: does admission open again as soon as an overload ends?

Phase one offers far more concurrent streams than the engine can serve within the TTFT SLO, for `overload_s`
seconds; the moment it ends (no new overload request after that instant; those in flight finish), phase two starts a
moderate load of `after_streams` streams. Every request has its own prompt and is sampled (through `sluice bench
serve`'s HTTP target), so neither the response cache nor the prefix cache can answer it. Reported: what each phase
got (200, 429, 503, transport errors), and for phase two how long after the overload's end the last request was
refused — the issue's bound is 2 s; queueing behind the overload's remaining streams is allowed, rejecting is
not."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from services.bench.metrics import percentile
from services.bench.serve_metrics import RequestRecord
from services.bench.serve_targets import HttpTarget
from services.bench.soak import new_soak_key
from services.common.settings import Settings

WORDS = ("river", "harbour", "granite", "lantern", "orchard", "meadow", "copper", "signal", "winter", "atlas",
         "quarry", "ferry", "market", "canyon", "beacon", "thistle", "compass", "timber", "glacier", "village")


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    overload_s: float = 10.0
    overload_streams: int = 64
    after_streams: int = 4
    after_requests: int = 48
    output_len: int = 128
    seed: int = 0


@dataclass(slots=True)
class Sent:
    phase: str
    sent_s: float  # since the start of the run
    status: int | str
    ttft_ms: float | None = None


@dataclass(slots=True)
class _Run:
    target: HttpTarget
    config: RecoveryConfig
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    sent: list[Sent] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        words = " ".join(self.rng.choice(WORDS) for _ in range(90))
        return [{"role": "user", "content": f"Request {self.rng.random():.12f}: write about {words}"}]

    async def one(self, phase: str) -> None:
        sent_s = round(time.monotonic() - self.started, 3)
        record = RequestRecord("http", session=len(self.sent), turn=0, prompt_tokens=0,
                               expected_tokens=self.config.output_len)
        try:
            await self.target.send(self.messages(), self.config.output_len, record)
            status: int | str = record.http_status or 0
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        ttft = record.ttft
        self.sent.append(Sent(phase, sent_s, status, None if ttft is None else round(ttft * 1e3, 1)))


async def _drive(run: _Run) -> float:
    """Both phases; returns the overload's end, in seconds since the start."""
    config = run.config

    async def overload_stream() -> None:
        while time.monotonic() - run.started < config.overload_s:
            await run.one("overload")

    overload = [asyncio.create_task(overload_stream()) for _ in range(config.overload_streams)]
    await asyncio.sleep(config.overload_s)
    ended = time.monotonic() - run.started
    remaining = iter(range(config.after_requests))

    async def after_stream() -> None:
        for _ in remaining:
            await run.one("after")

    await asyncio.gather(*(after_stream() for _ in range(config.after_streams)))
    await asyncio.gather(*overload)
    return ended


def _phase(sent: list[Sent]) -> dict[str, object]:
    ttfts = [s.ttft_ms for s in sent if s.ttft_ms is not None]
    return {"requests": len(sent), "statuses": {str(k): v for k, v in Counter(s.status for s in sent).items()},
            "ttft_ms_p50": percentile(ttfts, 50), "ttft_ms_p95": percentile(ttfts, 95)}


def summarize(sent: list[Sent], ended: float) -> dict[str, object]:
    """Both phases' outcomes; `ended`: the overload's end, in seconds since the start."""
    after = [s for s in sent if s.phase == "after"]
    refused = [s for s in after if s.status != 200]
    return {
        "overload": _phase([s for s in sent if s.phase == "overload"]),
        "after": _phase(after),
        "after_refused": len(refused),
        "last_refusal_after_overload_end_s": round(max(s.sent_s for s in refused) - ended, 3) if refused else None,
        "meets_2s_bound": all(s.sent_s - ended <= 2.0 for s in refused),
    }


def run(settings: Settings, config: RecoveryConfig) -> dict[str, object]:
    tenant, key = new_soak_key(settings)  # enterprise tier: the tier the bound is for
    async def drive() -> tuple[_Run, float]:
        target = HttpTarget(settings.public_base_url, settings.model_name, key)
        try:
            state = _Run(target, config, random.Random(config.seed))
            return state, await _drive(state)
        finally:
            await target.close()

    state, ended = asyncio.run(drive())
    return {
        "meta": {"tenant": tenant, "overload_s": config.overload_s, "overload_streams": config.overload_streams,
                 "after_streams": config.after_streams, "output_len": config.output_len,
                 "overload_end_s": round(ended, 3)},
        **summarize(state.sent, ended),
        "requests": [{"phase": s.phase, "sent_s": s.sent_s, "status": s.status, "ttft_ms": s.ttft_ms}
                     for s in sorted(state.sent, key=lambda s: s.sent_s)],
    }
