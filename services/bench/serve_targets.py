"""The three ways `sluice bench serve` reaches a running stack, each streaming one chat turn into a RequestRecord.

- `http`: Envoy's OpenAI facade, `POST /v1/chat/completions` with `stream: true` (Server-Sent Events) — the path
  OpenAI SDKs take through Envoy, the orchestrator and its pipeline;
- `grpc`: the native `sluice.v1.Chat/Generate` stream, through Envoy's port unless told otherwise;
- `triton`: straight to Triton's `tensorrt_llm` model, one decoupled gRPC stream per request as the orchestrator
  itself calls it (services/orchestrator/triton_llm.py), with the prompt rendered by the same chat template.

Every request is sampled (temperature 1, no seed, so the response cache never answers) and asks for exactly its
output length (`min_tokens` = `max_tokens`).
"""

from __future__ import annotations

import json
import time
from typing import Protocol

import grpc
import httpx
from sluice.v1 import chat_pb2, chat_pb2_grpc

from engine.tokenizer import ChatTokenizer
from services.bench.serve_metrics import RequestRecord
from services.orchestrator.replicated_llm import ReplicatedLLM
from services.orchestrator.triton_llm import LLMParams, TritonLLM

TARGETS = ("http", "grpc", "triton")
TEMPERATURE = 1.0


class Target(Protocol):
    name: str

    async def send(self, messages: list[dict[str, str]], output_len: int, record: RequestRecord) -> None:
        """Streams one turn, filling `record` (times, tokens, reply text, or the error)."""

    async def close(self) -> None: ...


class HttpTarget:
    name = "http"

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float = 300.0) -> None:
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout_s,
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=512))

    async def send(self, messages: list[dict[str, str]], output_len: int, record: RequestRecord) -> None:
        body = {"model": self.model, "messages": messages, "stream": True, "max_tokens": output_len,
                "min_tokens": output_len, "temperature": TEMPERATURE, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        record.start = time.perf_counter()
        async with self.client.stream("POST", self.url, json=body) as reply:
            record.http_status = reply.status_code
            if reply.headers.get("retry-after", "").isdigit():
                record.retry_after_s = float(reply.headers["retry-after"])
            if reply.status_code != 200:
                record.error = f"HTTP {reply.status_code}: {(await reply.aread())[:200].decode(errors='replace')}"
                return
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter()
                event = json.loads(line[6:])
                if "error" in event:
                    record.error = f"stream error: {event['error'].get('message', '')[:160]}"
                    return
                if event.get("usage"):
                    record.output_tokens = int(event["usage"]["completion_tokens"])
                for choice in event.get("choices") or ():
                    record.finish_reason = choice.get("finish_reason") or record.finish_reason
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        record.chunk_times.append(now)
                        parts.append(content)
        record.end = time.perf_counter()
        record.text = "".join(parts)

    async def close(self) -> None:
        await self.client.aclose()


class GrpcTarget:
    name = "grpc"

    def __init__(self, address: str, model: str, api_key: str | None, timeout_s: float = 300.0) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = chat_pb2_grpc.ChatStub(self.channel)
        self.model = model
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout_s = timeout_s

    async def send(self, messages: list[dict[str, str]], output_len: int, record: RequestRecord) -> None:
        request = chat_pb2.GenerateRequest(
            model=self.model, messages=[chat_pb2.Message(role=m["role"], content=m["content"]) for m in messages],
            sampling=chat_pb2.SamplingParams(max_tokens=output_len, min_tokens=output_len, temperature=TEMPERATURE))
        parts: list[str] = []
        record.start = time.perf_counter()
        try:
            async for event in self.stub.Generate(request, metadata=self.metadata, timeout=self.timeout_s):
                kind = event.WhichOneof("event")
                if kind == "delta" and event.delta.token_count:
                    record.chunk_times.append(time.perf_counter())
                    parts.append(event.delta.content)
                elif kind == "finish":
                    record.output_tokens = event.finish.usage.completion_tokens
                    record.finish_reason = chat_pb2.FinishReason.Name(event.finish.reason).removeprefix(
                        "FINISH_REASON_").lower()
        except grpc.aio.AioRpcError as exc:
            record.error = f"gRPC {exc.code().name}: {(exc.details() or '')[:160]}"
            return
        record.end = time.perf_counter()
        record.text = "".join(parts)

    async def close(self) -> None:
        await self.channel.close()


class TritonTarget:
    name = "triton"

    def __init__(self, url: str, tokenizer: ChatTokenizer, model_name: str = "tensorrt_llm",
                 llm: TritonLLM | ReplicatedLLM | None = None) -> None:
        """`llm` replaces the client of `url` (several replicas behind the orchestrator's replica routing)."""
        self.llm = llm or TritonLLM(url, model_name=model_name)
        self.tokenizer = tokenizer
        self._ids = 0

    async def send(self, messages: list[dict[str, str]], output_len: int, record: RequestRecord) -> None:
        prompt = self.tokenizer.encode_chat(messages)
        params = LLMParams(max_tokens=output_len, min_tokens=output_len, end_id=self.tokenizer.eos_token_id,
                           temperature=TEMPERATURE)
        self._ids += 1
        ids: list[int] = []
        record.start = time.perf_counter()
        try:
            async for chunk in self.llm.stream(f"bench-serve-{self._ids}", prompt, params):
                record.chunk_times.append(time.perf_counter())
                ids.extend(chunk.token_ids)
        except Exception as exc:  # an ApiError from the client, or the server went away
            record.error = f"Triton: {type(exc).__name__}: {str(exc)[:160]}"
            return
        record.end = time.perf_counter()
        record.output_tokens = len(ids)
        record.text = self.tokenizer.decode(ids)

    async def close(self) -> None:
        await self.llm.close()
