"""`sluice bench safety`: what moderation costs, measured against a running safety service and Triton classifier.

- Input: CheckInput latency (p50/p90/p99) for a 1,000-character prompt, sequential requests after a warm-up,
  beside its parts — a bare gRPC round trip to the same server (health Check) and the `safety_classifier` model
  called straight through Triton — so the figure can be read.
- Output: streaming moderation the way the orchestrator's output guard uses CheckOutput, in lock step: write one
  token-sized chunk (4 characters), wait for its decision, write the next. The time per chunk is what moderation
  adds to each output token (the generator waits for it); its mean over a 2,000-character answer is the figure,
  with p50/p99 per chunk (the chunks that trigger a classifier call are the slow ones). The same answer sent
  without waiting (pipelined) is reported for comparison.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sluice.v1 import chat_pb2, safety_pb2, safety_pb2_grpc

CHUNK = 4  # characters per streamed chunk, about one token of English
PROMPT_CHARS = 1000
ANSWER_CHARS = 2000

BENCH_TEXT = ("I'm planning a two-week trip through Portugal and Spain next spring with my partner. We like "
              "food, architecture and short hikes, and we'd rather take trains than rent a car. Could you suggest "
              "a route that starts in Lisbon and ends in Barcelona, with two or three nights in each place, and "
              "tell us which cities are worth a day trip? We also want to know roughly how much the trains cost, "
              "whether we should book them in advance, and which neighbourhoods are quiet but central enough to "
              "walk everywhere. My partner is vegetarian, so restaurant tips that work for both of us would be "
              "great. We will arrive on a Friday evening, so please plan the first day lightly. Finally, what "
              "should we pack for the weather in April, and are there any festivals or holidays then that might "
              "make hotels more expensive or museums close? Thanks a lot for your help, we're really excited!! ")


def _text(chars: int) -> str:
    return (BENCH_TEXT * (chars // len(BENCH_TEXT) + 1))[:chars]


def _summary(samples_s: list[float]) -> dict[str, float]:
    """n, mean and percentiles in milliseconds."""
    ms = np.asarray(samples_s) * 1000  # percentiles: linear interpolation, as services/bench/metrics.py
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "max_ms": float(ms.max())}


async def _timed(call: Callable[[], Awaitable[object]], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def input_latency(channel: grpc.aio.Channel, requests: int, policy_id: str = "") -> dict[str, float]:
    stub = safety_pb2_grpc.SafetyStub(channel)
    request = safety_pb2.CheckInputRequest(messages=[chat_pb2.Message(role="user", content=_text(PROMPT_CHARS))],
                                           policy_id=policy_id, request_id="bench")
    verdict = await stub.CheckInput(request, timeout=10)
    if verdict.action != safety_pb2.ACTION_ALLOW:
        raise RuntimeError(f"the benchmark prompt was not allowed: {[c.category for c in verdict.categories]}")
    await _timed(lambda: stub.CheckInput(request, timeout=10), 20)  # warm-up
    return _summary(await _timed(lambda: stub.CheckInput(request, timeout=10), requests))


async def grpc_roundtrip(channel: grpc.aio.Channel, requests: int) -> dict[str, float]:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    await _timed(lambda: stub.Check(request, timeout=10), 20)
    return _summary(await _timed(lambda: stub.Check(request, timeout=10), requests))


async def triton_classifier_latency(triton_url: str, requests: int) -> dict[str, float]:
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput

    client = triton_aio.InferenceServerClient(url=triton_url)
    try:
        tensor = InferInput("text", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[_text(PROMPT_CHARS).encode()]], dtype=np.object_))
        await _timed(lambda: client.infer("safety_classifier", [tensor]), 20)
        return _summary(await _timed(lambda: client.infer("safety_classifier", [tensor]), requests))
    finally:
        await client.close()


async def output_lockstep(channel: grpc.aio.Channel, answer: str, policy_id: str = "") -> dict[str, Any]:
    """One CheckOutput stream used as the output guard uses it; per-chunk round trips."""
    stub = safety_pb2_grpc.SafetyStub(channel)
    call = stub.CheckOutput(timeout=120)
    chunks = [answer[i:i + CHUNK] for i in range(0, len(answer), CHUNK)]
    samples, emitted = [], []
    started = time.perf_counter()
    for i, text in enumerate(chunks):
        chunk = safety_pb2.OutputChunk(text=text, policy_id=policy_id if i == 0 else "",
                                       request_id="bench" if i == 0 else "")
        sent = time.perf_counter()
        await call.write(chunk)
        decision = await call.read()
        samples.append(time.perf_counter() - sent)
        emitted.append(decision.text)
        if decision.action == safety_pb2.ACTION_STOP:
            raise RuntimeError("the benchmark answer was stopped by the output guard")
    await call.done_writing()
    final = await call.read()
    emitted.append(final.text)
    total = time.perf_counter() - started
    summary = _summary(samples)
    return {"tokens": len(chunks), "ms_per_token": total * 1000 / len(chunks), "per_token_p50_ms": summary["p50_ms"],
            "per_token_p99_ms": summary["p99_ms"], "per_token_max_ms": summary["max_ms"],
            "intact": "".join(emitted) == answer}


async def output_pipelined(channel: grpc.aio.Channel, answer: str) -> dict[str, Any]:
    stub = safety_pb2_grpc.SafetyStub(channel)
    chunks = [answer[i:i + CHUNK] for i in range(0, len(answer), CHUNK)]

    async def requests() -> AsyncIterator[safety_pb2.OutputChunk]:
        for i, text in enumerate(chunks):
            yield safety_pb2.OutputChunk(text=text, request_id="bench" if i == 0 else "")

    emitted = []
    started = time.perf_counter()
    async for decision in stub.CheckOutput(requests(), timeout=120):
        emitted.append(decision.text)
    total = time.perf_counter() - started
    return {"tokens": len(chunks), "ms_per_token": total * 1000 / len(chunks), "intact": "".join(emitted) == answer}


async def measure(address: str, requests: int = 300, triton_url: str | None = None,
                  streams: int = 3) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        report: dict[str, Any] = {"address": address, "prompt_chars": PROMPT_CHARS, "answer_chars": ANSWER_CHARS,
                        "chunk_chars": CHUNK}
        report["input"] = await input_latency(channel, requests)
        report["grpc_roundtrip"] = await grpc_roundtrip(channel, requests)
        if triton_url:
            report["triton_classifier"] = await triton_classifier_latency(triton_url, requests)
        answer = _text(ANSWER_CHARS)
        await output_lockstep(channel, answer[:400])  # warm-up
        runs = [await output_lockstep(channel, answer) for _ in range(streams)]
        report["output_lockstep"] = min(runs, key=lambda r: r["ms_per_token"]) | {
            "ms_per_token_runs": [round(r["ms_per_token"], 4) for r in runs],
            "intact": all(r["intact"] for r in runs)}
        report["output_pipelined"] = await output_pipelined(channel, answer)
    return report


def format_report(report: dict[str, Any]) -> str:
    i, out = report["input"], report["output_lockstep"]
    lines = [f"input check, {report['prompt_chars']}-character prompt ({i['n']} sequential requests): "
             f"p50 {i['p50_ms']:.2f} ms, p90 {i['p90_ms']:.2f} ms, p99 {i['p99_ms']:.2f} ms",
             f"  bare gRPC round trip to the same server: p50 {report['grpc_roundtrip']['p50_ms']:.2f} ms"]
    if "triton_classifier" in report:
        lines.append(f"  safety_classifier straight through Triton: p50 {report['triton_classifier']['p50_ms']:.2f} ms")
    lines += [f"output moderation, lock step ({out['tokens']} tokens of {report['chunk_chars']} characters): "
              f"{out['ms_per_token']:.3f} ms per token (runs {out['ms_per_token_runs']}); per token p50 "
              f"{out['per_token_p50_ms']:.3f} ms, p99 {out['per_token_p99_ms']:.3f} ms",
              f"  pipelined (no waiting per token): {report['output_pipelined']['ms_per_token']:.3f} ms per token",
              f"  emitted text identical to the answer: {out['intact'] and report['output_pipelined']['intact']}"]
    return "\n".join(lines)


def run(address: str, requests: int, triton_url: str | None, results_dir: Path | None) -> dict[str, Any]:
    report = asyncio.run(measure(address, requests, triton_url))
    print(format_report(report))
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "safety_bench.json").write_text(json.dumps(report, indent=2))
    return report
