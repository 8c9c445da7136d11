"""The native gRPC Chat API: typed requests and a typed stream of start / delta / finish events."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from sluice.v1 import chat_pb2, chat_pb2_grpc

from services.common.errors import ApiError, invalid
from services.orchestrator.chat_request import ROLES, ChatMessage, ChatRequest
from services.orchestrator.generate import Finished, Generator, PreparedGeneration, TextDelta
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.openai_facade import request_id_of
from services.orchestrator.pipeline.pipeline import ChatPipeline, tenant_of
from services.orchestrator.size_bound import PromptSizeBound
from services.orchestrator.tenancy.metering import Metering, begin_request
from services.orchestrator.tenancy.principal import current_principal

log = logging.getLogger(__name__)

FINISH_REASONS = {"stop": chat_pb2.FINISH_REASON_STOP, "length": chat_pb2.FINISH_REASON_LENGTH,
           "content_filter": chat_pb2.FINISH_REASON_CONTENT_FILTER, "tool_calls": chat_pb2.FINISH_REASON_TOOL_CALLS}


def delta_response(response_id: str, model: str, event: TextDelta) -> chat_pb2.GenerateResponse:
    delta = chat_pb2.GenerateResponse.Delta(content=event.text, token_count=event.token_count)
    return chat_pb2.GenerateResponse(id=response_id, model=model, delta=delta)


def finish_response(response_id: str, model: str, event: Finished) -> chat_pb2.GenerateResponse:
    usage = chat_pb2.Usage(prompt_tokens=event.usage.prompt_tokens, completion_tokens=event.usage.completion_tokens,
                           total_tokens=event.usage.total_tokens,
                           cached_prompt_tokens=event.usage.cached_prompt_tokens)
    finish = chat_pb2.GenerateResponse.Finish(reason=FINISH_REASONS[event.reason], usage=usage)
    return chat_pb2.GenerateResponse(id=response_id, model=model, finish=finish)


def to_chat_request(request: chat_pb2.GenerateRequest) -> ChatRequest:
    sampling = request.sampling
    return ChatRequest(
        model=request.model,
        messages=[ChatMessage(role=m.role, content=m.content, name=m.name or None) for m in request.messages],
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else None,
        temperature=sampling.temperature if sampling.HasField("temperature") else 1.0,
        top_p=sampling.top_p if sampling.HasField("top_p") else 1.0,
        top_k=sampling.top_k if sampling.HasField("top_k") else 0,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=list(sampling.stop),
        presence_penalty=sampling.presence_penalty if sampling.HasField("presence_penalty") else 0.0,
        frequency_penalty=sampling.frequency_penalty if sampling.HasField("frequency_penalty") else 0.0,
        repetition_penalty=sampling.repetition_penalty if sampling.HasField("repetition_penalty") else 1.0,
        min_tokens=sampling.min_tokens if sampling.HasField("min_tokens") else 0,
        stream=True,
        user=request.user or None,
    )


def validate(request: ChatRequest) -> None:
    if not request.model:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not request.messages:
        raise invalid("'messages' must not be empty.", "messages", "empty_array")
    for index, message in enumerate(request.messages):
        if message.role not in ROLES - {"tool"}:
            raise invalid(f"Invalid role {message.role!r}.", f"messages.[{index}].role", "invalid_value")
    if not 0 <= request.temperature <= 2:
        raise invalid("'temperature' must be between 0 and 2.", "temperature", "invalid_value")
    if not 0 <= request.top_p <= 1:
        raise invalid("'top_p' must be between 0 and 1.", "top_p", "invalid_value")
    if request.max_tokens is not None and request.max_tokens < 1:
        raise invalid("'max_tokens' must be at least 1.", "max_tokens", "invalid_value")


class NativeChat(chat_pb2_grpc.ChatServicer):
    def __init__(self, generator: Generator, pipeline: ChatPipeline | None = None,
                 metering: Metering | None = None, lifecycle: RequestLifecycle | None = None) -> None:
        self.generator = generator
        self.metering = metering
        self.pipeline = pipeline or ChatPipeline()  # input guard → (retrieve: not on this API yet) → output guard
        self.lifecycle = lifecycle or RequestLifecycle(self.pipeline, PromptSizeBound.for_catalog(generator.catalog))

    async def Generate(self, request: chat_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[chat_pb2.GenerateResponse]:
        request_id = request_id_of(context)
        response_id = f"gen-{uuid.uuid4().hex}"
        meter = begin_request(self.metering, current_principal.get(), endpoint="chat.generate",
                              request_id=request_id)
        meter.activate()
        events = None
        prepared: PreparedGeneration | None = None
        try:
            try:
                chat = to_chat_request(request)
                meter.model, meter.user = chat.model, chat.user
                validate(chat)
                admitted = await self.lifecycle.admit(chat, meter, self.generator, tenant=tenant_of(context),
                                                      request_id=request_id)
                chat, prepared, run = admitted.chat, admitted.prepared, admitted.run
            except ApiError as error:
                meter.fail(error.status)
                await abort(context, error, await meter.headers())
                return
            await context.send_initial_metadata((("x-request-id", request_id), *prepared.headers().items(),
                                                 *run.headers().items(), *meter.rate_limit_headers.items()))
            yield chat_pb2.GenerateResponse(id=response_id, model=chat.model, start=chat_pb2.GenerateResponse.Start(
                role="assistant", created=int(time.time())))
            events = self.pipeline.guard(self.generator.run(prepared, request_id), run, prepared)
            try:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if event.text or event.token_count:
                            yield delta_response(response_id, chat.model, event)
                    elif isinstance(event, Finished):
                        yield finish_response(response_id, chat.model, event)
            except ApiError as error:
                meter.fail(error.status)
                await abort(context, error)
        except (asyncio.CancelledError, GeneratorExit):
            meter.cancelled = True
            raise
        finally:
            if events is not None:
                await events.aclose()
            if prepared is not None:
                prepared.release()  # its in-flight place, when generation never started (quota, client gone)
            await meter.finish()


async def abort(context: grpc.aio.ServicerContext, error: ApiError, headers: dict[str, str] | None = None) -> None:
    """Ends the call with the error's gRPC status; limits and Retry-After travel as trailing metadata."""
    trailers = dict(headers or {})
    if error.retry_after:
        trailers["retry-after"] = str(math.ceil(error.retry_after))
    if trailers:
        context.set_trailing_metadata(tuple(trailers.items()))
    await context.abort(error.grpc_code, error.message)
