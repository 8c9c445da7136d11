"""The OpenAI-compatible facade: HttpBody JSON in, JSON or Server-Sent Events out (Envoy transcodes to HTTP).

The HTTP status travels as the `x-http-status` response header, which Envoy's Lua filter turns into `:status`, so
errors reach OpenAI SDKs in OpenAI's shape and status codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from sluice.v1 import openai_pb2, openai_pb2_grpc

from services.common.errors import ApiError, internal, model_not_found
from services.common.telemetry import current_request
from services.orchestrator.catalog import ModelCatalog
from services.orchestrator.chat_request import ChatRequest, parse_chat_request, parse_json_body
from services.orchestrator.embeddings import EmbeddingsEndpoint
from services.orchestrator.embeddings import model_card as embedding_model_card
from services.orchestrator.generate import Generator, PreparedGeneration, TextDelta
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.model_list import visible_model, visible_models
from services.orchestrator.pipeline.pipeline import ChatPipeline, PipelineRun, tenant_of
from services.orchestrator.size_bound import PromptSizeBound
from services.orchestrator.sse_frames import ChunkFrames, sse
from services.orchestrator.tenancy.metering import Metering, RequestMeter, begin_request
from services.orchestrator.tenancy.principal import current_principal
from services.orchestrator.tools.retrieve_tool import request_tenant
from services.orchestrator.tools.runner import (
    ServerToolRan,
    ToolCallsReady,
    ToolCallsRejected,
    ToolRunEvent,
    ToolRunner,
)
from services.retrieval.embedding_model import MODEL_NAME as EMBEDDING_MODEL

log = logging.getLogger(__name__)

JSON = "application/json"


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and value:
            return value
    state = current_request.get()  # the id the telemetry interceptor gave a call that came without one
    return state.request_id if state is not None else str(uuid.uuid4())


def _last_user_text(chat: ChatRequest | None) -> str | None:
    """What the audit log hashes for a safety event: the newest user turn."""
    if chat is None:
        return None
    return next((m.content for m in reversed(chat.messages) if m.role == "user"), None)


def _json_body(payload: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=JSON, data=json.dumps(payload, ensure_ascii=False).encode())


async def _send_headers(context: grpc.aio.ServicerContext, request_id: str, status: int = 200,
                        extra: dict[str, str] | None = None) -> None:
    headers = {"x-request-id": request_id, "x-http-status": str(status), **(extra or {})}
    await context.send_initial_metadata(tuple(headers.items()))


async def error_response(context: grpc.aio.ServicerContext, request_id: str, error: ApiError,
                         headers: dict[str, str] | None = None) -> httpbody_pb2.HttpBody:
    extra = dict(headers or {})
    if error.retry_after:
        extra["retry-after"] = str(math.ceil(error.retry_after))
    await _send_headers(context, request_id, error.status, extra)
    return _json_body(error.body())


class OpenAIFacade(openai_pb2_grpc.OpenAIServicer):
    def __init__(self, catalog: ModelCatalog, generator: Generator, tools: ToolRunner | None = None,
                 embeddings: EmbeddingsEndpoint | None = None, pipeline: ChatPipeline | None = None,
                 metering: Metering | None = None, lifecycle: RequestLifecycle | None = None) -> None:
        self.catalog = catalog
        self.metering = metering  # limits, quotas and usage records per API key (None: not metered)
        self.generator = generator
        self.tools = tools or ToolRunner(generator)
        self.embeddings = embeddings
        self.pipeline = pipeline or ChatPipeline()  # declared stages around generation (pipelines/stages.yaml)
        self.lifecycle = lifecycle or RequestLifecycle(self.pipeline, PromptSizeBound.for_catalog(catalog))

    async def Embeddings(self, request: httpbody_pb2.HttpBody,
                         context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        request_id = request_id_of(context)
        if self.embeddings is None:
            return await error_response(context, request_id, model_not_found(EMBEDDING_MODEL))
        meter = begin_request(self.metering, current_principal.get(), endpoint="embeddings", request_id=request_id)
        try:
            return await self.embeddings.respond(request, context, request_id, meter)
        except asyncio.CancelledError:
            meter.cancelled = True
            raise
        finally:
            await meter.finish()

    async def ListModels(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        await _send_headers(context, request_id_of(context))
        models = visible_models(self.catalog, current_principal.get(), self._extra_models())
        return _json_body({"object": "list", "data": models})

    def _extra_models(self) -> list[dict[str, Any]]:
        return [embedding_model_card()] if self.embeddings is not None else []

    async def RetrieveModel(self, request: openai_pb2.RetrieveModelRequest,
                            context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        request_id = request_id_of(context)
        try:
            card = visible_model(self.catalog, current_principal.get(), request.model, self._extra_models())
        except ApiError as error:
            return await error_response(context, request_id, error)
        await _send_headers(context, request_id)
        return _json_body(card)

    async def ChatCompletions(self, request: httpbody_pb2.HttpBody,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        request_id = request_id_of(context)
        chat: ChatRequest | None = None
        meter = begin_request(self.metering, current_principal.get(), endpoint="chat.completions",
                              request_id=request_id)
        meter.activate()  # every generation round below counts its tokens into this request's usage
        events: AsyncIterator[ToolRunEvent] | None = None
        prepared: PreparedGeneration | None = None
        try:
            try:
                chat = parse_chat_request(parse_json_body(request.data))
                meter.model, meter.user = chat.model, chat.user
                tenant = tenant_of(context)
                request_tenant.set(tenant)  # server tools (e.g. `retrieve`) act as this tenant
                # size, context, limits, admission, then the stages (which may rewrite the messages)
                admitted = await self.lifecycle.admit(chat, meter, self.tools, tenant=tenant, request_id=request_id)
                chat, prepared, run = admitted.chat, admitted.prepared, admitted.run
            except ApiError as error:
                meter.fail(error.status)
                if error.code == "content_policy_violation" and error.details:
                    await meter.safety_blocked("input_guard", error.details.get("categories", []),
                                               _last_user_text(chat))
                yield await error_response(context, request_id, error, await meter.headers())
                return
            completion_id = f"chatcmpl-{uuid.uuid4().hex}"
            events = self.pipeline.guard(self.tools.run(chat, prepared, request_id), run, prepared)  # output guard
            headers = meter.rate_limit_headers  # routing, cache and stage headers are added when sent: they change
            if chat.stream:
                async for frame in self._stream(chat, prepared, completion_id, request_id, events, context, run,
                                                headers, meter):
                    yield frame
            else:
                yield await self._complete(chat, prepared, completion_id, request_id, events, context, run, headers,
                                           meter)
            if run.blocked_by_output is not None:
                await meter.safety_blocked("output_guard", run.blocked_by_output, _last_user_text(chat))
        except (asyncio.CancelledError, GeneratorExit):
            meter.cancelled = True  # the client went away: what was generated is still recorded
            raise
        finally:
            if events is not None:
                await events.aclose()  # stops generation and drains the engine's last tokens into the account
            if prepared is not None:
                prepared.release()  # its in-flight place, when generation never started (quota, client gone)
            await meter.finish()

    async def _complete(self, chat: ChatRequest, prepared: PreparedGeneration, completion_id: str, request_id: str,
                        events: AsyncIterator[ToolRunEvent], context: grpc.aio.ServicerContext,
                        run: PipelineRun, headers: dict[str, str], meter: RequestMeter) -> httpbody_pb2.HttpBody:
        parts: list[str] = []
        extra: dict[str, Any] = {}
        server_tool_calls: list[dict[str, Any]] = []
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, ToolCallsReady):
                    extra["tool_calls"] = [call.as_openai() for call in event.calls]
                elif isinstance(event, ToolCallsRejected):
                    extra["invalid_tool_calls"] = [error.as_openai() for error in event.errors]
                elif isinstance(event, ServerToolRan):
                    server_tool_calls.append(event.as_openai())
                else:
                    finished = event
                    run.finished(event.reason, event.categories)
        except ApiError as error:
            meter.fail(error.status)
            return await error_response(context, request_id, error, headers)
        except Exception:
            log.exception("request %s failed", request_id)
            meter.fail(500)
            return await error_response(context, request_id, internal(), headers)
        await _send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})
        content: str | None = "".join(parts)
        if "tool_calls" in extra and not content.strip():
            content = None  # OpenAI: a tool-calling turn without text has null content
        payload = {
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": chat.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None, **extra},
                         "logprobs": None, "finish_reason": finished.reason}],
            "usage": finished.usage.as_openai(),
        }
        if server_tool_calls:
            payload["server_tool_calls"] = server_tool_calls  # extension: what the orchestrator ran (server_tools)
        if run.citations is not None:
            payload["citations"] = run.citations  # extension: the passages the retrieve stage put in the prompt
        return _json_body(payload)

    async def _stream(self, chat: ChatRequest, prepared: PreparedGeneration, completion_id: str, request_id: str,
                      events: AsyncIterator[ToolRunEvent], context: grpc.aio.ServicerContext,
                      run: PipelineRun, headers: dict[str, str],
                      meter: RequestMeter) -> AsyncIterator[httpbody_pb2.HttpBody]:
        frames = ChunkFrames(completion_id, int(time.time()), chat.model, chat.include_usage)
        chunk = frames.chunk

        # Wait for the first event before committing to a 200: a failure before any token is a proper HTTP error.
        try:
            first = await anext(events)
        except ApiError as error:
            meter.fail(error.status)
            yield await error_response(context, request_id, error, headers)
            return
        except Exception:
            log.exception("request %s failed before its first token", request_id)
            meter.fail(500)
            yield await error_response(context, request_id, internal(), headers)
            return
        await _send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})
        yield sse(chunk({"role": "assistant", "content": ""}))
        event: ToolRunEvent | None = first
        try:
            while event is not None:
                if isinstance(event, TextDelta):
                    if event.text:
                        yield frames.text(event.text)
                elif isinstance(event, ToolCallsReady):
                    for index, call in enumerate(event.calls):  # as OpenAI streams them: name first, then arguments
                        yield sse(chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                                          "function": {"name": call.name, "arguments": ""}}]}))
                        for fragment in call.fragments:
                            yield sse(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
                elif isinstance(event, ToolCallsRejected):
                    yield sse(chunk({"invalid_tool_calls": [error.as_openai() for error in event.errors]}))
                elif isinstance(event, ServerToolRan):
                    pass  # server-side rounds are not streamed; only the final answer is
                else:
                    final = chunk({}, event.reason)
                    run.finished(event.reason, event.categories)
                    if run.citations is not None:
                        final["citations"] = run.citations  # extension: in the final chunk, as on the JSON answer
                    yield sse(final)
                    if chat.include_usage:
                        yield sse(frames.usage(event.usage.as_openai()))
                    yield sse("[DONE]")
                    return
                event = await anext(events, None)
        except ApiError as error:
            meter.fail(error.status)
            yield sse(error.body())
        except Exception:
            log.exception("request %s failed mid-stream", request_id)
            meter.fail(500)
            yield sse(internal().body())
