"""`sluice bench tenancy`: what auth + limits add to each request, per backend.

Per simulated request: the interceptor's key check (the usual, cached case; the uncached database lookup is measured
separately), admission against RPM, TPM, the daily quota and the concurrency slot for both the key and the tenant,
and the settlement at the end. The usage record is written off the request path's critical section (after the last
byte) and is timed on its own. All in one process, one run, side by side."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from services.common.db import create_db_engine
from services.orchestrator.migrations import migrate
from services.orchestrator.tenancy.auth import AuthInterceptor
from services.orchestrator.tenancy.limits import InProcessLimiter, Limiter
from services.orchestrator.tenancy.metering import Metering
from services.orchestrator.tenancy.redis_limits import RedisLimiter
from services.orchestrator.tenancy.store import TenantStore
from services.orchestrator.tenancy.usage import UsageLog


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 4),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4),
            "n": len(ordered)}


async def _per_request(auth: AuthInterceptor, metering: Metering, key: str, requests: int) -> list[float]:
    samples = []
    for index in range(requests):
        started = time.perf_counter()
        principal = await auth.authenticate(key)
        meter = metering.begin(principal, endpoint="bench", request_id=f"bench-{index}")
        await meter.admit("sluice-demo", 40, 64)
        meter.account.prompt_tokens, meter.account.completion_tokens = 40, 20
        await meter.finish()  # settles the reservation and frees the slot (no usage log here: timed below)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _measure(redis_url: str | None, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        migrate(url)
        engine = create_db_engine(url)
        store = TenantStore(engine)
        key = store.create_key("bench", tier="enterprise").plaintext
        auth = AuthInterceptor(store, None, render_error=None, cache_ttl_s=3600)  # type: ignore[arg-type]
        report: dict[str, Any] = {}
        backends: list[tuple[str, Limiter]] = [("in-process", InProcessLimiter())]
        if redis_url:
            backends.append(("redis", RedisLimiter(redis_url, prefix=f"sluice-bench:{time.time_ns()}:")))
        for name, limiter in backends:
            metering = Metering(limiter)
            await _per_request(auth, metering, key, 50)  # warm-up: connections, caches, scripts
            report[name] = _percentiles(await _per_request(auth, metering, key, requests))
            await limiter.close()
        uncached = []
        for _ in range(200):
            started = time.perf_counter()
            await asyncio.to_thread(store.authenticate, key)
            uncached.append((time.perf_counter() - started) * 1000)
        report["auth_uncached_db_lookup"] = _percentiles(uncached)
        recording = Metering(InProcessLimiter(), UsageLog(engine))
        principal = store.authenticate(key)
        writes = []
        for index in range(200):
            meter = recording.begin(principal, endpoint="bench", request_id=f"write-{index}")
            started = time.perf_counter()
            await meter.finish()
            writes.append((time.perf_counter() - started) * 1000)
        report["usage_record_write_sqlite"] = _percentiles(writes)
        engine.dispose()
        return report


def run(results: Path, requests: int, redis_url: str | None) -> dict[str, Any]:
    report = asyncio.run(_measure(redis_url, requests))
    results.mkdir(parents=True, exist_ok=True)
    (results / "tenancy.json").write_text(json.dumps(report, indent=2))
    return report
