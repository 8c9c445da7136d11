"""`sluice bench abuse`: one hostile tenant must not hurt another.

A victim (an enterprise key) sends small chat requests, first alone (the baseline), then while an attacker floods
the API for `attack_s` seconds with four kinds of abuse at once:

- max-size prompts (1 MB of text, under Envoy's body limit, far over any model's context window),
- malformed bodies (not JSON),
- bad keys (random `sk-` keys),
- unread streams (streaming requests whose client reads the headers, then never reads the body).

Reported: the victim's success ratio and p50/p95 latency in both phases, and the attacker's status codes by kind.
Targets (issue S11): victim ≥ 99% success at ≤ 2× its baseline p50; the attacker's keyed requests only ever get
400, 413 or 429 (an unread stream that was admitted within its tier's concurrency gets its 200 headers), bad keys 401.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from services.bench.metrics import percentile

HUGE_PROMPT = "word " * 200_000
SUCCESS_TARGET = 0.99
LATENCY_FACTOR_TARGET = 2.0
ATTACKER_STATUSES = {400, 413, 429}


@dataclass(frozen=True, slots=True)
class AbuseConfig:
    model: str  # the victim's model
    attacker_model: str  # one the attacker's tier may use (else its streams are refused with 403)
    baseline_s: float = 8.0
    attack_s: float = 20.0
    victim_concurrency: int = 2
    victim_max_tokens: int = 8
    huge_rate: float = 20.0  # max-size prompts per second
    malformed_rate: float = 20.0
    bad_key_rate: float = 20.0
    unread_streams: int = 16  # streams the attacker keeps open without reading
    timeout_s: float = 30.0


@dataclass(slots=True)
class Phase:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        sent = sum(self.statuses.values())
        ok = self.statuses.get(200, 0)
        return {"sent": sent, "ok": ok, "success": ok / sent if sent else None,
                "p50_ms": percentile(self.latencies_s, 50) * 1000 if self.latencies_s else None,
                "p95_ms": percentile(self.latencies_s, 95) * 1000 if self.latencies_s else None,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


def _chat(model: str, content: str, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    # temperature > 0: never served from the response cache, so every victim request really runs
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0.8, "stream": stream}


async def _victim(client: httpx.AsyncClient, config: AbuseConfig, key: str, phase: Phase, until: float) -> None:
    headers = {"authorization": f"Bearer {key}"}
    index = 0
    while time.monotonic() < until:
        index += 1
        started = time.monotonic()
        try:
            response = await client.post("/chat/completions", headers=headers,
                                         json=_chat(config.model, f"Say hello to guest {index}.",
                                                    config.victim_max_tokens))
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        if status == 200:
            phase.latencies_s.append(time.monotonic() - started)
        phase.statuses[status] += 1


async def _paced(rate: float, until: float, send) -> None:
    """Calls `send()` at `rate` per second (each in its own task, so a slow answer does not slow the flood)."""
    if rate <= 0:
        return
    tasks: set[asyncio.Task] = set()
    interval, next_at = 1.0 / rate, time.monotonic()
    while next_at < until:
        task = asyncio.create_task(send())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def _post(client: httpx.AsyncClient, statuses: Counter[int], headers: dict[str, str], body: bytes) -> None:
    try:
        response = await client.post("/chat/completions", headers={**headers, "content-type": "application/json"},
                                     content=body)
        statuses[response.status_code] += 1
    except httpx.HTTPError:
        statuses[0] += 1


async def _unread_streams(client: httpx.AsyncClient, config: AbuseConfig, key: str, statuses: Counter[int],
                          until: float) -> None:
    """Keeps up to `unread_streams` streaming requests open, reading nothing after the status line."""
    headers = {"authorization": f"Bearer {key}"}
    async with AsyncExitStack() as held:
        opened = 0
        while time.monotonic() < until and opened < config.unread_streams:
            try:
                response = await held.enter_async_context(client.stream(
                    "POST", "/chat/completions", headers=headers,
                    json=_chat(config.attacker_model, "Tell me a long story.", 256, stream=True)))
                statuses[response.status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1
            opened += 1
            await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, until - time.monotonic()))  # held open, unread, until the attack ends


async def run_async(base_url: str, victim_key: str, attacker_key: str, config: AbuseConfig) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=config.timeout_s, limits=limits) as victim_client, \
            httpx.AsyncClient(base_url=base_url, timeout=config.timeout_s, limits=limits) as attacker:
        baseline, attacked = Phase(), Phase()
        until = time.monotonic() + config.baseline_s
        await asyncio.gather(*(_victim(victim_client, config, victim_key, baseline, until)
                               for _ in range(config.victim_concurrency)))
        kinds: dict[str, Counter[int]] = {k: Counter() for k in ("huge", "malformed", "bad_key", "unread_stream")}
        keyed = {"authorization": f"Bearer {attacker_key}"}
        huge = json.dumps(_chat(config.attacker_model, HUGE_PROMPT, 8)).encode()
        malformed = b'{"model": "' + config.attacker_model.encode() + b'", "messages": [{"role": "user", "content": '
        until = time.monotonic() + config.attack_s
        await asyncio.gather(
            *(_victim(victim_client, config, victim_key, attacked, until) for _ in range(config.victim_concurrency)),
            _paced(config.huge_rate, until, lambda: _post(attacker, kinds["huge"], keyed, huge)),
            _paced(config.malformed_rate, until, lambda: _post(attacker, kinds["malformed"], keyed, malformed)),
            _paced(config.bad_key_rate, until, lambda: _post(
                attacker, kinds["bad_key"], {"authorization": f"Bearer sk-{secrets.token_hex(16)}"},
                json.dumps(_chat(config.attacker_model, "hi", 8)).encode())),
            _unread_streams(attacker, config, attacker_key, kinds["unread_stream"], until))
    return report(config, baseline, attacked, kinds)


def report(config: AbuseConfig, baseline: Phase, attacked: Phase, kinds: dict[str, Counter[int]]) -> dict[str, Any]:
    base, under = baseline.summary(), attacked.summary()
    factor = (under["p50_ms"] / base["p50_ms"]) if base["p50_ms"] and under["p50_ms"] else None
    streams_admitted = kinds["unread_stream"].get(200, 0)
    unexpected = {kind: {str(s): n for s, n in counts.items()
                         if s not in (ATTACKER_STATUSES | ({401} if kind == "bad_key" else set())
                                      | ({200} if kind == "unread_stream" else set()))}
                  for kind, counts in kinds.items()}
    unexpected = {kind: codes for kind, codes in unexpected.items() if codes}
    return {
        "config": asdict(config),
        "baseline": base,
        "attacked": under,
        "p50_factor": factor,
        "attacker": {kind: {str(s): n for s, n in sorted(c.items())} for kind, c in kinds.items()},
        "unread_streams_admitted": streams_admitted,
        "attacker_unexpected_statuses": unexpected,
        "targets": {"victim_success": SUCCESS_TARGET, "p50_factor": LATENCY_FACTOR_TARGET},
        "passed": bool(under["success"] is not None and under["success"] >= SUCCESS_TARGET
                       and factor is not None and factor <= LATENCY_FACTOR_TARGET and not unexpected),
    }


def run(base_url: str, victim_key: str, attacker_key: str, config: AbuseConfig, results: Path) -> dict[str, Any]:
    figures = asyncio.run(run_async(base_url, victim_key, attacker_key, config))
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"abuse-{stamp}.json").write_text(json.dumps(figures, indent=2))
    (results / "abuse.json").write_text(json.dumps(figures, indent=2))
    return figures
