"""Spans and metrics for the chat pipeline: one span per stage (input_guard, retrieve, generate, output_guard) with
the GenAI semantic-convention attributes on `generate`, and the request's token timings for the LLM metrics.

Prompt and completion text go on spans only when SLUICE_TRACE_CONTENT is on; otherwise spans carry ids, models,
sampling parameters, token counts and timings."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span

from services.common.metrics import LLMRequest, record_stage
from services.common.telemetry import current_request, stage_span, traced_stream
from services.orchestrator.chat_request import ChatRequest
from services.orchestrator.generate import Finished, PreparedGeneration, TextDelta


@contextmanager
def stage(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """The span (and latency metric) of an awaited stage: input_guard, retrieve."""
    with stage_span(name, {"sluice.stage": name, **(attributes or {})},
                    on_end=lambda outcome, seconds: record_stage(name, outcome, seconds)) as span:
        yield span


def note_request(model: str, tenant: str) -> None:
    """Labels the request's metrics before any stage runs (a request the input guard refuses is counted too)."""
    state = current_request.get()
    if state is not None and state.llm is not None:
        state.llm.model, state.llm.tenant = model or "unknown", tenant


def _request_attributes(chat: ChatRequest, prepared: PreparedGeneration, tenant: str) -> dict[str, Any]:
    params = prepared.params
    attributes: dict[str, Any] = {
        "sluice.stage": "generate", "sluice.tenant": tenant,
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "sluice", "gen_ai.system": "sluice",
        "gen_ai.request.model": chat.model, "gen_ai.request.max_tokens": params.max_tokens,
        "gen_ai.request.temperature": params.temperature, "gen_ai.request.top_p": params.top_p,
        "gen_ai.request.top_k": params.top_k, "gen_ai.request.stream": chat.stream,
    }
    if params.seed is not None:
        attributes["gen_ai.request.seed"] = params.seed
    if prepared.route is not None:
        attributes["sluice.deployment"] = prepared.route.deployment.name
        attributes["sluice.route"] = prepared.route.reason
    return attributes


class _Generation:
    """Watches the generate stage's events: the TTFT event, then usage and finish reason on the span."""

    def __init__(self, prepared: PreparedGeneration, request: LLMRequest | None, capture: bool) -> None:
        self.prepared = prepared
        self.request = request
        self.capture = capture
        self.started = time.monotonic()
        self.first_token = False
        self.text: list[str] = []

    def on_event(self, span: Span, event: Any) -> None:
        if isinstance(event, TextDelta):
            if event.token_count and not self.first_token:
                self.first_token = True
                now = time.monotonic()
                since_request = now - self.request.started if self.request is not None else None
                span.add_event("gen_ai.first_token", {
                    "gen_ai.server.time_to_first_token": now - self.started,
                    **({"sluice.ttft_since_request_s": since_request} if since_request is not None else {})})
            if self.capture and event.text:
                self.text.append(event.text)
        elif isinstance(event, Finished):
            prepared = self.prepared
            span.set_attributes({
                "gen_ai.response.model": prepared.entry.name,
                "gen_ai.usage.input_tokens": event.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": event.usage.completion_tokens,
                "gen_ai.usage.cached_input_tokens": event.usage.cached_prompt_tokens,
                "gen_ai.response.finish_reasons": (event.reason,),
            })
            if prepared.route is not None:
                span.set_attribute("sluice.deployment", prepared.route.deployment.name)
            if prepared.cache_status:
                span.set_attribute("sluice.cache", prepared.cache_status)

    def on_end(self, span: Span, outcome: str, seconds: float) -> None:
        if self.capture and self.text:
            span.set_attribute("gen_ai.output.messages", json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "".join(self.text)}]}]))
        span.set_attribute("sluice.outcome", outcome)
        record_stage("generate", outcome, seconds)


def observe_generation(events: AsyncIterator[Any], chat: ChatRequest, prepared: PreparedGeneration, tenant: str,
                       guard: Callable[[AsyncIterator[Any]], AsyncIterator[Any]] | None) -> AsyncIterator[Any]:
    """`events` (the generation) in a `generate` span, the output guard (if any) over it in an `output_guard`
    span, and what reaches the client recorded for the LLM metrics (TTFT, TPOT, inter-token latency, tokens)."""
    state = current_request.get()
    request = state.llm if state is not None else None
    capture = state.capture_content if state is not None else False
    attributes = _request_attributes(chat, prepared, tenant)
    if capture:
        attributes["gen_ai.input.messages"] = json.dumps(
            [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in chat.messages])
    generation = _Generation(prepared, request, capture)
    early = prepared.head_start.take_span() if prepared.head_start is not None else None  # started ahead
    stream = traced_stream("generate", events, attributes=attributes, on_event=generation.on_event,
                           on_end=generation.on_end, final=_finished, span=early)
    if guard is not None:
        stream = traced_stream("output_guard", guard(stream), attributes={"sluice.stage": "output_guard"},
                               on_end=lambda span, outcome, seconds: record_stage("output_guard", outcome, seconds),
                               final=_finished)
    if request is None:
        return stream
    request.model, request.tenant = prepared.entry.name, tenant
    return _delivered(stream, request, prepared)


def _finished(event: Any) -> bool:
    return isinstance(event, Finished)


async def _delivered(events: AsyncIterator[Any], request: LLMRequest,
                     prepared: PreparedGeneration) -> AsyncIterator[Any]:
    """Token arrivals as the client gets them (after the output guard), and how the answer ended."""
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                request.tokens_arrived(event.token_count)
                reservation = prepared.route.reservation if prepared.route is not None else None
                if reservation is not None and request.first_token_at is not None:
                    reservation.first_token()  # admission control learns the TTFT the client sees, from admission
            elif isinstance(event, Finished):
                request.model = prepared.entry.name
                request.finish_reason = event.reason
                request.prompt_tokens = event.usage.prompt_tokens
                request.cached_prompt_tokens = event.usage.cached_prompt_tokens
                request.output_tokens = max(request.output_tokens, event.usage.completion_tokens)
                request.cache_result = prepared.cache_status
            yield event
    except Exception:
        request.failed = True
        raise
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
