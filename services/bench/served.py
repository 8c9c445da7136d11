"""`sluice bench served`: the engine as Triton serves it — N concurrent streaming requests straight to the LLM slot
over gRPC, fixed output lengths — reporting output tokens/s, TTFT p50/p95 and responses per token (coalescing)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from engine.tokenizer import ChatTokenizer
from services.bench.metrics import percentile
from services.common.settings import Settings
from services.orchestrator.triton_llm import LLMParams, TritonLLM


async def _one(llm: TritonLLM, request_id: str, prompt: list[int], tokens: int, end_id: int) -> dict[str, float]:
    started = time.perf_counter()
    first, count, responses = None, 0, 0
    params = LLMParams(max_tokens=tokens, end_id=end_id, temperature=0.0, top_k=1, min_tokens=tokens)
    async for chunk in llm.stream(request_id, prompt, params):
        first = first if first is not None else time.perf_counter() - started
        count += len(chunk.token_ids)
        responses += 1
    return {"ttft": first or 0.0, "tokens": count, "responses": responses, "seconds": time.perf_counter() - started}


async def _run(settings: Settings, concurrency: int, requests: int, output_tokens: int) -> dict:
    tokenizer = ChatTokenizer.from_pretrained(settings.model_dir)
    rng = random.Random(0)
    prompts = [tokenizer.encode_chat([{"role": "user", "content": f"Question {i}: " + " ".join(
        rng.choice(["river", "stone", "cloud", "lamp", "field"]) for _ in range(rng.randint(4, 40)))}])
        for i in range(requests)]
    llm = TritonLLM(settings.triton_grpc_url)
    gate = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> dict[str, float]:
        async with gate:
            return await _one(llm, f"served-{i}-{time.monotonic_ns()}", prompts[i], output_tokens,
                              tokenizer.eos_token_id)

    started = time.perf_counter()
    results = await asyncio.gather(*(limited(i) for i in range(requests)))
    wall = time.perf_counter() - started
    await llm.close()
    ttfts = [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {"concurrency": concurrency, "requests": requests, "output_tokens_per_request": output_tokens,
            "output_tokens_per_s": tokens / wall, "wall_s": wall,
            "ttft_p50_ms": 1000 * percentile(ttfts, 50), "ttft_p95_ms": 1000 * percentile(ttfts, 95),
            "responses_per_token": sum(r["responses"] for r in results) / tokens}


def run(settings: Settings, concurrency: int, requests: int, output_tokens: int, results_dir: Path) -> dict:
    report = asyncio.run(_run(settings, concurrency, requests, output_tokens))
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"served_c{concurrency}.json").write_text(json.dumps(report, indent=2))
    return report
