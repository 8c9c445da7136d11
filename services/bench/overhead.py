"""`sluice bench overhead`: what the platform adds to time-to-first-token, measured side by side against a running
stack — the same prompt straight to Triton's LLM slot, to the orchestrator's native gRPC port, and through Envoy's
OpenAI HTTP/SSE facade, interleaved so machine noise hits all three alike."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import httpx
from sluice.v1 import chat_pb2, chat_pb2_grpc

from engine.tokenizer import ChatTokenizer
from services.bench.metrics import percentile
from services.common.settings import Settings
from services.orchestrator.triton_llm import LLMParams, TritonLLM

MESSAGES = [{"role": "user", "content": "Hello!"}]


async def triton_ttft(llm: TritonLLM, prompt: list[int], end_id: int) -> float:
    started = time.perf_counter()
    stream = llm.stream(f"bench-{time.monotonic_ns()}", prompt, LLMParams(max_tokens=1, end_id=end_id,
                                                                          temperature=0.7))
    async for _ in stream:
        break
    elapsed = time.perf_counter() - started
    await stream.aclose()
    return elapsed


async def native_ttft(stub: chat_pb2_grpc.ChatStub, model: str) -> float:
    request = chat_pb2.GenerateRequest(model=model, messages=[chat_pb2.Message(**m) for m in MESSAGES],
                                       sampling=chat_pb2.SamplingParams(max_tokens=1, temperature=0.7))
    started = time.perf_counter()
    async for event in stub.Generate(request, timeout=60):
        if event.WhichOneof("event") == "delta":
            return time.perf_counter() - started
    return time.perf_counter() - started


async def http_ttft(client: httpx.AsyncClient, base_url: str, model: str) -> float:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 1, "temperature": 0.7, "stream": True}
    started = time.perf_counter()
    async with client.stream("POST", f"{base_url}/chat/completions", json=body) as reply:
        async for line in reply.aiter_lines():
            if '"content"' in line and '"content":""' not in line:
                return time.perf_counter() - started
    return time.perf_counter() - started


def run(settings: Settings, requests: int, results_dir: Path) -> dict:
    return asyncio.run(_run(settings, requests, results_dir))


async def _run(settings: Settings, requests: int, results_dir: Path) -> dict:
    """Sampled requests (temperature 0.7, no seed), so the response cache never answers."""
    tokenizer = ChatTokenizer.from_pretrained(settings.model_dir)
    prompt = tokenizer.encode_chat(MESSAGES)
    llm = TritonLLM(settings.triton_grpc_url)
    channel = grpc.aio.insecure_channel(f"{settings.host}:{settings.orchestrator_port}")
    stub = chat_pb2_grpc.ChatStub(channel)
    http = httpx.AsyncClient(timeout=60)
    samples: dict[str, list[float]] = {"triton": [], "orchestrator_grpc": [], "envoy_http": []}
    for i in range(requests + 3):  # the first three warm every path up and are not counted
        measured = {"triton": await triton_ttft(llm, prompt, tokenizer.eos_token_id),
                    "orchestrator_grpc": await native_ttft(stub, settings.model_name),
                    "envoy_http": await http_ttft(http, settings.public_base_url, settings.model_name)}
        if i >= 3:
            for key, value in measured.items():
                samples[key].append(value)
    await llm.close()
    await channel.close()
    await http.aclose()
    report = {key: {"p50_ms": 1000 * percentile(values, 50), "p99_ms": 1000 * percentile(values, 99)}
              for key, values in samples.items()}
    report["added_by_orchestrator_p50_ms"] = report["orchestrator_grpc"]["p50_ms"] - report["triton"]["p50_ms"]
    report["added_by_envoy_http_p50_ms"] = report["envoy_http"]["p50_ms"] - report["orchestrator_grpc"]["p50_ms"]
    report["requests"] = requests
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "overhead.json").write_text(json.dumps(report, indent=2))
    return report
