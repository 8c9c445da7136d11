"""The order of work before a request generates, the same for every API (OpenAI HTTP, native Chat, Conversations):

    authenticate (AuthInterceptor) → validate the body (the API module) → bound its size by characters →
    count prompt tokens against the model's context window (400) → rate limits, TPM and quotas (403, 429) →
    admission (routing: 503 overloaded) → stages (input guard, retrieve) → the final generation plan

A request the input guard is expected to pass unchanged (no retrieval, no PII the guard would redact) starts its
generation when it is admitted, in parallel with the input guard: the engine prefills while the safety service
checks, and nothing generated is read before the guard allows the prompt (head_start.py).

Every check is cheaper than the one after it, and a request refused for size, quota or overload never reaches the
safety, retrieval or Triton services. The API modules only translate their wire format to a ChatRequest and the
events back; this module decides whether, and in what shape, the request runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from services.orchestrator.chat_request import ChatRequest
from services.orchestrator.generate import PreparedGeneration, PromptCount
from services.orchestrator.pipeline.pipeline import ChatPipeline, PipelineRun
from services.orchestrator.size_bound import LARGE_TEXT_CHARS, PromptSizeBound
from services.orchestrator.tenancy.metering import RequestMeter


class Planner(Protocol):
    """What turns a ChatRequest into a generation: Generator (plain chat) or ToolRunner (tool-calling rounds)."""

    def count(self, chat: ChatRequest, *, tenant: str | None = None) -> PromptCount: ...

    def prepare(self, chat: ChatRequest, *, tenant: str | None = None,
                request_id: str | None = None) -> PreparedGeneration: ...

    def reprepare(self, prepared: PreparedGeneration, chat: ChatRequest) -> PreparedGeneration: ...

    def start_early(self, prepared: PreparedGeneration, request_id: str) -> bool: ...

    async def discard_head_start(self, prepared: PreparedGeneration) -> None: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed every check and stage: run `prepared`, report through `run`."""

    chat: ChatRequest  # as the stages left it (redacted, retrieved passages added)
    prepared: PreparedGeneration
    run: PipelineRun


class RequestLifecycle:
    def __init__(self, pipeline: ChatPipeline, size_bound: PromptSizeBound) -> None:
        self.pipeline = pipeline
        self.size_bound = size_bound

    async def admit(self, chat: ChatRequest, meter: RequestMeter, planner: Planner, *, tenant: str,
                    request_id: str) -> Admitted:
        """Runs the checks in order; raises ApiError at the first that refuses. The caller owns the returned
        generation's reservation (`prepared.release()` if it never runs)."""
        chars = self.size_bound.check(chat)
        if chars > LARGE_TEXT_CHARS:  # tokenising a long text is CPU work: keep it off the event loop
            counted = await asyncio.to_thread(planner.count, chat, tenant=tenant)
        else:
            counted = planner.count(chat, tenant=tenant)
        priority = await meter.admit(counted.model, counted.prompt_tokens, counted.max_tokens)
        prepared = planner.prepare(chat, tenant=tenant, request_id=request_id)  # routing and admission control
        try:
            if self.pipeline.may_start_early(chat):  # prefill while the input guard runs; read only if it allows
                self.pipeline.plan_for(prepared, tenant=tenant, priority=priority)
                planner.start_early(prepared, request_id)
            run = await self.pipeline.before_generate(chat, tenant=tenant, request_id=request_id)
            if run.chat.messages != chat.messages:  # a stage rewrote the prompt: tokenise what the model will see
                await planner.discard_head_start(prepared)
                prepared = planner.reprepare(prepared, run.chat)
            run.apply(prepared, priority)
        except BaseException:
            await planner.discard_head_start(prepared)  # refused (or the client left): the tokens are still billed
            prepared.release()
            raise
        return Admitted(run.chat, prepared, run)
