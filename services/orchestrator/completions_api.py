"""POST /v1/completions, OpenAI's legacy text completion API: the prompt is encoded as is (no chat template, no
persona), given as a string or as token ids (or a list holding one of those); `echo` puts the prompt before the
answer; `logprobs` (an integer) asks for the legacy log-prob shape. The request then takes the same path as a chat
completion (lifecycle checks, stages, generation, output guard)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2

from services.common.errors import ApiError, invalid
from services.orchestrator.catalog import ModelCatalog
from services.orchestrator.chat_request import (
    MAX_N,
    MAX_TOP_LOGPROBS,
    ChatMessage,
    ChatRequest,
    _integer,
    _number,
    _stop,
    parse_json_body,
    parse_model,
    refuse_unsupported,
    unsupported,
)
from services.orchestrator.choices import ChoiceResult, total_usage
from services.orchestrator.generate import Finished, PreparedGeneration, TextDelta
from services.orchestrator.generation_api import GenerationApi
from services.orchestrator.http_replies import error_response, json_body, last_user_text, request_id_of, send_headers
from services.orchestrator.logprobs import TokenLogprobs, TokenTexts, completion_logprobs
from services.orchestrator.sse_frames import sse
from services.orchestrator.tenancy.metering import begin_request
from services.orchestrator.tenancy.principal import current_principal
from services.orchestrator.tools.runner import ToolRunEvent

KNOWN_FIELDS = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
    "presence_penalty", "frequency_penalty", "user", "echo", "logprobs", "suffix", "best_of",
    "top_k", "repetition_penalty", "min_tokens",  # Sluice extensions, as on chat completions
}
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


def _prompt(raw: Any, catalog: ModelCatalog, model: str) -> tuple[str, tuple[int, ...] | None]:
    """The prompt text, and its token ids when the client sent ids."""
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str | list):
        raw = raw[0]  # a batch of one prompt
    if isinstance(raw, str):
        if not raw:
            raise invalid("Invalid 'prompt': the prompt is empty.", "prompt", "invalid_value")
        return raw, None
    if isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        try:
            tokenizer = catalog.get(model).tokenizer
        except ApiError:
            raise invalid("Invalid 'prompt': token ids need a named model (its tokenizer decides what they mean).",
                          "prompt", "invalid_value") from None
        if not all(0 <= t < tokenizer.vocab_size for t in raw):
            raise invalid(f"Invalid 'prompt': token ids must be between 0 and {tokenizer.vocab_size - 1}.", "prompt",
                          "invalid_value")
        return tokenizer.decode(raw, False), tuple(raw)
    if isinstance(raw, list) and len(raw) > 1:
        raise unsupported("prompt", " with more than one prompt (send one request per prompt)")
    raise invalid("Invalid type for 'prompt': expected a string, an array of token ids, or an array holding one of "
                  "those.", "prompt", "invalid_type")


def parse_completion_request(body: dict[str, Any], catalog: ModelCatalog) -> tuple[ChatRequest, bool]:
    """The request as the generation path takes it, and whether to echo the prompt."""
    refuse_unsupported(body, KNOWN_FIELDS)
    model = parse_model(body)
    if body.get("prompt") is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if body.get("suffix") not in (None, ""):
        raise unsupported("suffix", " (no insertion model is served)")
    if body.get("best_of") not in (None, 1):
        raise unsupported("best_of", " (only 1)")
    text, ids = _prompt(body["prompt"], catalog, model)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)
                                or not isinstance(options.get("include_usage", False), bool)):
        raise invalid("Invalid 'stream_options': expected {\"include_usage\": boolean} with 'stream' enabled.",
                      "stream_options", "invalid_value")
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise invalid("Invalid type for 'echo': expected a boolean.", "echo", "invalid_type")
    top = _integer(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    if echo and top is not None:
        raise unsupported("logprobs", " together with 'echo' (the engine gives no log-probs for prompt tokens)")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("Invalid type for 'user': expected a string.", "user", "invalid_type")
    chat = ChatRequest(
        model=model, messages=[ChatMessage(role="user", content=text)],
        max_tokens=_integer(body, "max_tokens", 1, 1 << 20) or DEFAULT_MAX_TOKENS,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0), top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0, 1 << 20) or 0, seed=_integer(body, "seed", -(2**63), 2**63 - 1),
        stop=_stop(body), presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.01, 10.0),
        min_tokens=_integer(body, "min_tokens", 0, 1 << 20) or 0, stream=stream,
        include_usage=bool((options or {}).get("include_usage", False)), user=user,
        logprobs=top is not None, top_logprobs=top or 0, n=_integer(body, "n", 1, MAX_N) or 1,
        prompt_ids=ids, raw_prompt=True)
    return chat, echo


class CompletionsApi:
    """Renders the generation events of a /v1/completions request."""

    def __init__(self, chat: ChatRequest, echo: bool, completion_id: str, created: int) -> None:
        self.chat = chat
        self.echo = echo
        self.completion_id = completion_id
        self.created = created

    def _head(self, model: str) -> dict[str, Any]:
        return {"id": self.completion_id, "object": "text_completion", "created": self.created, "model": model,
                "system_fingerprint": None}

    def _logprobs(self, events: list[TokenLogprobs], prepared: PreparedGeneration,
                  offset: int) -> dict[str, Any] | None:
        if not self.chat.logprobs:
            return None
        return completion_logprobs(events, TokenTexts.of(prepared.tokenizer), offset)

    def complete(self, results: list[ChoiceResult], prepared: PreparedGeneration) -> dict[str, Any]:
        prefix = self.chat.messages[0].content if self.echo else ""
        choices = [{"index": index, "text": prefix + result.text, "finish_reason": result.finished.reason,
                    "logprobs": self._logprobs(result.logprobs, prepared, len(prefix))}
                   for index, result in enumerate(results)]
        return {**self._head(prepared.entry.name), "choices": choices,
                "usage": total_usage([r.finished for r in results]).as_openai()}

    async def stream(self, events: AsyncIterator[tuple[int, Any]],
                     prepared: PreparedGeneration) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """The SSE frames; raises ApiError (the caller writes the error frame) when generation fails mid-stream."""
        head = self._head(prepared.entry.name)
        offsets = [0] * self.chat.n  # characters of each choice's text so far (log-prob text offsets)

        def frame(index: int, text: str, finish: str | None = None,
                  logprobs: dict[str, Any] | None = None) -> httpbody_pb2.HttpBody:
            payload = {**head, "choices": [{"index": index, "text": text, "finish_reason": finish,
                                            "logprobs": logprobs}]}
            if self.chat.include_usage:
                payload["usage"] = None
            return sse(payload)

        if self.echo:
            for index in range(self.chat.n):
                offsets[index] = len(self.chat.messages[0].content)
                yield frame(index, self.chat.messages[0].content)
        finished: list[Finished] = []
        async for index, event in events:
            if isinstance(event, TextDelta) and event.text:
                yield frame(index, event.text)
            elif isinstance(event, TokenLogprobs) and self.chat.logprobs:
                logprobs = self._logprobs([event], prepared, offsets[index])
                offsets[index] += sum(len(t) for t in logprobs["tokens"])
                yield frame(index, "", logprobs=logprobs)
            elif isinstance(event, Finished):
                finished.append(event)
                yield frame(index, "", event.reason)
                if len(finished) == self.chat.n:
                    if self.chat.include_usage:
                        yield sse({**head, "choices": [], "usage": total_usage(finished).as_openai()})
                    yield sse("[DONE]")
                    return


class CompletionsEndpoint(GenerationApi):
    """POST /v1/completions, mixed into the OpenAI facade."""

    catalog: ModelCatalog

    async def Completions(self, request: httpbody_pb2.HttpBody,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        request_id = request_id_of(context)
        meter = begin_request(self.metering, current_principal.get(), endpoint="completions", request_id=request_id)
        meter.activate()
        events: AsyncIterator[tuple[int, ToolRunEvent]] | None = None
        prepared: PreparedGeneration | None = None
        chat: ChatRequest | None = None
        try:
            try:
                chat, echo = parse_completion_request(parse_json_body(request.data), self.catalog)
                meter.model, meter.user, meter.metadata = chat.model, chat.user, chat.metadata
                chat, prepared, run = await self._admit(chat, meter, context, request_id)
            except ApiError as error:
                yield await self._refusal(error, meter, context, request_id, chat)
                return
            api = CompletionsApi(chat, echo, f"cmpl-{uuid.uuid4().hex}", int(time.time()))
            events = self.choice_events(chat, prepared, run, request_id)
            headers = meter.rate_limit_headers
            if not chat.stream:
                results = await self._collect(events, chat.n, run)
                await send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})
                yield json_body(api.complete(results, prepared))
            else:
                started, refusal = await self._start_stream(events, context, request_id, headers, meter, prepared,
                                                            run)
                if refusal is not None:
                    yield refusal
                    return
                try:
                    async for frame in api.stream(started, prepared):
                        yield frame
                except Exception as exc:
                    yield sse(self._stream_failure(exc, meter, request_id).body())
            if run.blocked_by_output is not None:
                await meter.safety_blocked("output_guard", run.blocked_by_output, last_user_text(chat))
        except ApiError as error:  # before anything was sent (a non-streamed answer)
            meter.fail(error.status)
            yield await error_response(context, request_id, error, meter.rate_limit_headers)
        except (asyncio.CancelledError, GeneratorExit):
            meter.cancelled = True
            raise
        finally:
            await self._finish(events, prepared, meter)
