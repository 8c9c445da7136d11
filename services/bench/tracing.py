"""`sluice bench tracing`: what tracing every request costs in throughput, measured in one run against a running
stack. Rounds with 100% sampling and rounds with tracing off alternate (off, on, off, on, ...), so load from
anything else on the machine falls on both alike; each round sends the same concurrent workload of sampled chat
completions through Envoy (temperature 0.7, no seed: the response cache never answers).

Rounds come in pairs, in ABBA order (off-on, on-off, ...), so a drift in background load cancels out; the report
gives the ratio of the totals and the median of the per-pair ratios (robust to a noisy round).

"Off" is switched at run time, with no restart: Envoy's sampling (`tracing.random_sampling` through the admin
runtime) goes to 0, so the traceparent it sends is unsampled and the Python services record nothing; Triton's trace
level goes to OFF. "On" is Envoy at 100% and Triton at TIMESTAMPS. The report's `throughput_ratio` is completion
tokens/s with tracing on divided by tokens/s with it off (1.0 = free).

On a shared machine wall-clock throughput is noisy, so the benchmark also counts the CPU time the stack's processes
(every process of `sluice up`, Triton's model stubs included, from /proc) spend per request in each mode. Serving is
CPU-bound here, so `cpu_throughput_ratio` (CPU per request off / on) is the throughput ratio a saturated stack would
see, and it hardly depends on what else runs on the machine."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path

import httpx

from services.bench.metrics import percentile
from services.common.settings import Settings

PROMPTS = ["Tell me about the weather today.", "What is the capital of France?", "Write a short poem about rivers.",
           "How do I make a cup of tea?", "Name three colours.", "What is two plus two?"]


def stack_pids(settings: Settings) -> list[int]:
    """The stack's processes (from <run dir>/stack.json) and all their descendants."""
    try:
        state = json.loads((settings.run_dir / "stack.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    wanted = {int(pid) for pid in (state.get("processes") or {}).values() if pid}
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        grew = bool(children)
        wanted |= children
    return sorted(wanted)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far (processes that are gone count nothing)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return used / ticks


def _post(url: str, body: bytes | None = None) -> None:
    request = urllib.request.Request(url, data=body if body is not None else b"", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def set_tracing(settings: Settings, on: bool) -> None:
    """Envoy's sampling and Triton's trace level, switched together."""
    envoy_share = int(10000 * settings.trace_sample_rate) if on else 0  # the runtime key counts in 1/10000
    _post(f"http://{settings.host}:{settings.envoy_admin_port}/runtime_modify?tracing.random_sampling={envoy_share}")
    level = ["TIMESTAMPS"] if on else ["OFF"]
    _post(f"http://{settings.host}:{settings.triton_http_port}/v2/trace/setting",
          json.dumps({"trace_level": level}).encode())


async def _round(client: httpx.AsyncClient, settings: Settings, requests: int, concurrency: int,
                 max_tokens: int, offset: int, pids: list[int] | None = None) -> dict:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(offset + i)
    latencies: list[float] = []
    tokens = [0]
    failures = [0]

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {"model": settings.model_name, "max_tokens": max_tokens, "temperature": 0.7,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
            started = time.perf_counter()
            reply = await client.post(f"{settings.public_base_url}/chat/completions", json=body)
            if reply.status_code != 200:
                failures[0] += 1
                continue
            latencies.append(time.perf_counter() - started)
            tokens[0] += reply.json()["usage"]["completion_tokens"]

    cpu_before = cpu_seconds(pids or [])
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(pids or []) - cpu_before
    return {"seconds": seconds, "requests": len(latencies), "failures": failures[0], "completion_tokens": tokens[0],
            "stack_cpu_s": cpu,
            "tokens_per_s": tokens[0] / seconds, "requests_per_s": len(latencies) / seconds,
            "latency_p50_ms": 1000 * percentile(latencies, 50) if latencies else None}


async def _run(settings: Settings, api_key: str, rounds: int, requests: int, concurrency: int,
               max_tokens: int) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"}
    results: dict[str, list[dict]] = {"off": [], "on": []}
    pids = stack_pids(settings)
    async with httpx.AsyncClient(timeout=120, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        await _round(client, settings, concurrency * 2, concurrency, max_tokens, 0)  # warm-up, not counted
        for index in range(rounds * 2):
            pair, second = divmod(index, 2)
            mode = ("off", "on")[second ^ (pair % 2)]  # ABBA: off on, on off, off on, ...
            set_tracing(settings, on=mode == "on")
            await asyncio.sleep(0.5)
            results[mode].append(await _round(client, settings, requests, concurrency, max_tokens, index * requests,
                                              pids))
    return results


def run(settings: Settings, api_key: str, results_dir: Path, rounds: int = 10, requests: int = 24,
        concurrency: int = 8, max_tokens: int = 32) -> dict:
    try:
        results = asyncio.run(_run(settings, api_key, rounds, requests, concurrency, max_tokens))
    finally:
        set_tracing(settings, on=settings.trace_sample_rate > 0)  # back to how the stack was started

    def total(mode: str, key: str) -> float:
        return sum(r[key] for r in results[mode])

    throughput = {mode: total(mode, "completion_tokens") / total(mode, "seconds") for mode in results}
    cpu_per_request = {mode: 1000 * total(mode, "stack_cpu_s") / max(total(mode, "requests"), 1) for mode in results}
    request_rate = {mode: total(mode, "requests") / total(mode, "seconds") for mode in results}
    report = {
        "workload": {"rounds_per_mode": rounds, "requests_per_round": requests, "concurrency": concurrency,
                     "max_tokens": max_tokens, "model": settings.model_name},
        "tokens_per_s": throughput, "requests_per_s": request_rate,
        "latency_p50_ms": {mode: statistics.median(r["latency_p50_ms"] for r in results[mode]) for mode in results},
        "throughput_ratio": throughput["on"] / throughput["off"],
        "throughput_ratio_median_of_pairs": statistics.median(
            on["tokens_per_s"] / off["tokens_per_s"] for off, on in zip(results["off"], results["on"], strict=True)),
        "request_rate_ratio": request_rate["on"] / request_rate["off"],
        "failures": {mode: total(mode, "failures") for mode in results},
        "stack_cpu_ms_per_request": cpu_per_request,
        "cpu_throughput_ratio": (cpu_per_request["off"] / cpu_per_request["on"]
                                 if cpu_per_request["on"] else None),
        "rounds": results,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "tracing_bench.json").write_text(json.dumps(report, indent=2))
    return report
