"""The generate stage: chat request → prompt tokens → Triton token stream → text deltas, finish reason, usage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from engine.tokenizer import ChatTemplateError
from services.common.errors import ApiError, invalid
from services.orchestrator.catalog import ModelCatalog, ModelEntry
from services.orchestrator.chat_request import ChatRequest
from services.orchestrator.stop_strings import StopStringMatcher
from services.orchestrator.triton_llm import LLMParams, TritonLLM

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_prompt_tokens}}


@dataclass(slots=True)
class TextDelta:
    text: str
    token_count: int


@dataclass(slots=True)
class Finished:
    reason: str  # "stop" | "length"
    usage: Usage


@dataclass(slots=True)
class PreparedGeneration:
    """A request that passed validation and tokenisation: nothing after this point is the client's fault."""

    entry: ModelEntry
    prompt_ids: list[int]
    params: LLMParams
    stops: list[str]


class Generator:
    def __init__(self, catalog: ModelCatalog, llm: TritonLLM, default_max_tokens: int = 256) -> None:
        self.catalog = catalog
        self.llm = llm
        self.default_max_tokens = default_max_tokens

    def prepare(self, request: ChatRequest) -> PreparedGeneration:
        entry = self.catalog.get(request.model)
        try:
            prompt_ids = entry.tokenizer.encode_chat([m.as_template_dict() for m in request.messages])
        except ChatTemplateError as exc:
            raise invalid(f"The messages cannot be formatted for this model: {exc}", "messages") from exc
        room = entry.context_window - len(prompt_ids)
        if room <= 0 or (request.max_tokens is not None and request.max_tokens > room):
            asked = request.max_tokens or 1
            raise ApiError(400, f"This model's maximum context length is {entry.context_window} tokens. However, "
                                f"you requested {len(prompt_ids) + asked} tokens ({len(prompt_ids)} in the messages, "
                                f"{asked} in the completion). Please reduce the length of the messages or "
                                "completion.", "invalid_request_error", "messages", "context_length_exceeded")
        max_tokens = request.max_tokens or min(self.default_max_tokens, room)
        greedy = request.temperature == 0 or request.top_p == 0
        params = LLMParams(
            max_tokens=max_tokens, end_id=entry.tokenizer.eos_token_id,
            temperature=0.0 if greedy else request.temperature, top_p=request.top_p if not greedy else 1.0,
            top_k=1 if greedy else request.top_k, seed=request.seed,
            presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
            repetition_penalty=request.repetition_penalty, min_tokens=request.min_tokens)
        return PreparedGeneration(entry, prompt_ids, params, request.stop)

    async def run(self, prepared: PreparedGeneration, request_id: str) -> AsyncIterator[TextDelta | Finished]:
        usage = Usage(prompt_tokens=len(prepared.prompt_ids))
        detok = prepared.entry.tokenizer.detokenizer()
        stops = StopStringMatcher(prepared.stops)
        tokens = self.llm.stream(request_id, prepared.prompt_ids, prepared.params)
        stopped = False
        try:
            async for chunk in tokens:
                usage.completion_tokens += len(chunk.token_ids)
                usage.cached_prompt_tokens = chunk.cached_prompt_tokens
                text, stopped = stops.feed(detok.push(chunk.token_ids))
                yield TextDelta(text, len(chunk.token_ids))  # text may be empty while a character or stop is pending
                if stopped:
                    break
        finally:
            await tokens.aclose()  # cancels the Triton request if it is still running
        if not stopped:
            tail, stopped = stops.feed(detok.flush())
            tail += "" if stopped else stops.flush()
            if tail:
                yield TextDelta(tail, 0)
        length = not stopped and usage.completion_tokens >= prepared.params.max_tokens
        yield Finished("length" if length else "stop", usage)
