"""The OpenAI-compatible facade: HttpBody JSON in, JSON or Server-Sent Events out (Envoy transcodes to HTTP).

One gRPC servicer for every route of protos/sluice/v1/openai.proto: models, embeddings and chat completions here;
/v1/completions (completions_api.py) and /v1/responses (responses_api.py) are mixed in, on the generation path they
share (generation_api.py). Replies and errors are built by http_replies.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from sluice.v1 import openai_pb2, openai_pb2_grpc

from services.common.errors import ApiError, internal, model_not_found
from services.orchestrator.catalog import ModelCatalog
from services.orchestrator.chat_request import ChatRequest, parse_chat_request, parse_json_body
from services.orchestrator.choices import ChoiceResult, total_usage
from services.orchestrator.completions_api import CompletionsEndpoint
from services.orchestrator.conversations.store import ConversationStore
from services.orchestrator.embeddings import EmbeddingsEndpoint
from services.orchestrator.embeddings import model_card as embedding_model_card
from services.orchestrator.generate import Finished, Generator, PreparedGeneration, TextDelta
from services.orchestrator.http_replies import (  # request_id_of and error_response are also used by other APIs
    error_response,
    json_body,
    last_user_text,
    request_id_of,
    send_headers,
)
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.logprobs import TokenLogprobs, TokenTexts, chat_content
from services.orchestrator.model_list import visible_model, visible_models
from services.orchestrator.pipeline.pipeline import ChatPipeline, PipelineRun, tenant_of
from services.orchestrator.response_chain import ResponseChain
from services.orchestrator.responses_api import ResponsesEndpoint
from services.orchestrator.size_bound import PromptSizeBound
from services.orchestrator.sse_frames import ChunkFrames, sse
from services.orchestrator.tenancy.metering import Metering, RequestMeter, begin_request
from services.orchestrator.tenancy.principal import current_principal
from services.orchestrator.tools.retrieve_tool import request_tenant
from services.orchestrator.tools.runner import ToolCallsReady, ToolCallsRejected, ToolRunEvent, ToolRunner
from services.retrieval.embedding_model import MODEL_NAME as EMBEDDING_MODEL

__all__ = ["OpenAIFacade", "error_response", "request_id_of"]

log = logging.getLogger(__name__)


class OpenAIFacade(CompletionsEndpoint, ResponsesEndpoint, openai_pb2_grpc.OpenAIServicer):
    def __init__(self, catalog: ModelCatalog, generator: Generator, tools: ToolRunner | None = None,
                 embeddings: EmbeddingsEndpoint | None = None, pipeline: ChatPipeline | None = None,
                 metering: Metering | None = None, lifecycle: RequestLifecycle | None = None,
                 conversations: ConversationStore | None = None) -> None:
        self.catalog = catalog
        self.chain = ResponseChain(conversations) if conversations is not None else None  # previous_response_id
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
        await send_headers(context, request_id_of(context))
        models = visible_models(self.catalog, current_principal.get(), self._extra_models())
        return json_body({"object": "list", "data": models})

    def _extra_models(self) -> list[dict[str, Any]]:
        return [embedding_model_card()] if self.embeddings is not None else []

    async def RetrieveModel(self, request: openai_pb2.RetrieveModelRequest,
                            context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        request_id = request_id_of(context)
        try:
            card = visible_model(self.catalog, current_principal.get(), request.model, self._extra_models())
        except ApiError as error:
            return await error_response(context, request_id, error)
        await send_headers(context, request_id)
        return json_body(card)

    async def ChatCompletions(self, request: httpbody_pb2.HttpBody,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        request_id = request_id_of(context)
        chat: ChatRequest | None = None
        meter = begin_request(self.metering, current_principal.get(), endpoint="chat.completions",
                              request_id=request_id)
        meter.activate()  # every generation round below counts its tokens into this request's usage
        events: AsyncIterator[tuple[int, ToolRunEvent]] | None = None
        prepared: PreparedGeneration | None = None
        try:
            try:
                chat = parse_chat_request(parse_json_body(request.data))
                meter.model, meter.user, meter.metadata = chat.model, chat.user, chat.metadata
                tenant = tenant_of(context)
                request_tenant.set(tenant)  # server tools (e.g. `retrieve`) act as this tenant
                # size, context, limits, admission, then the stages (which may rewrite the messages)
                admitted = await self.lifecycle.admit(chat, meter, self.tools, tenant=tenant, request_id=request_id)
                chat, prepared, run = admitted.chat, admitted.prepared, admitted.run
            except ApiError as error:
                meter.fail(error.status)
                if error.code == "content_policy_violation" and error.details:
                    await meter.safety_blocked("input_guard", error.details.get("categories", []),
                                               last_user_text(chat))
                yield await error_response(context, request_id, error, await meter.headers())
                return
            completion_id = f"chatcmpl-{uuid.uuid4().hex}"
            events = self.choice_events(chat, prepared, run, request_id)
            headers = meter.rate_limit_headers  # routing, cache and stage headers are added when sent: they change
            if chat.stream:
                async for frame in self._stream(chat, prepared, completion_id, request_id, events, context, run,
                                                headers, meter):
                    yield frame
            else:
                yield await self._complete(chat, prepared, completion_id, request_id, events, context, run, headers,
                                           meter)
            if run.blocked_by_output is not None:
                await meter.safety_blocked("output_guard", run.blocked_by_output, last_user_text(chat))
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
                        events: AsyncIterator[tuple[int, ToolRunEvent]], context: grpc.aio.ServicerContext,
                        run: PipelineRun, headers: dict[str, str], meter: RequestMeter) -> httpbody_pb2.HttpBody:
        results = [ChoiceResult() for _ in range(chat.n)]
        try:
            async for index, event in events:
                results[index].take(event)
                if isinstance(event, Finished):
                    run.finished(event.reason, event.categories)
        except ApiError as error:
            meter.fail(error.status)
            return await error_response(context, request_id, error, headers)
        except Exception:
            log.exception("request %s failed", request_id)
            meter.fail(500)
            return await error_response(context, request_id, internal(), headers)
        await send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})
        texts = TokenTexts.of(prepared.tokenizer) if chat.logprobs else None
        choices = []
        for index, result in enumerate(results):
            message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
            if result.tool_calls:
                message["tool_calls"] = [call.as_openai() for call in result.tool_calls]
                if not result.text.strip():
                    message["content"] = None  # OpenAI: a tool-calling turn without text has null content
            if result.invalid_tool_calls:
                message["invalid_tool_calls"] = [error.as_openai() for error in result.invalid_tool_calls]
            logprobs = {"content": chat_content(result.logprobs, texts), "refusal": None} if texts else None
            choices.append({"index": index, "message": message, "logprobs": logprobs,
                            "finish_reason": result.finished.reason})
        payload = {
            "id": completion_id, "object": "chat.completion", "created": int(time.time()),
            "model": prepared.entry.name,  # the public model that served it (`auto` names the one it chose)
            "system_fingerprint": None, "service_tier": "default", "choices": choices,
            "usage": total_usage([r.finished for r in results]).as_openai(),
        }
        server_tool_calls = [call for result in results for call in result.server_tool_calls]
        if server_tool_calls:
            payload["server_tool_calls"] = server_tool_calls  # extension: what the orchestrator ran (server_tools)
        if run.citations is not None:
            payload["citations"] = run.citations  # extension: the passages the retrieve stage put in the prompt
        return json_body(payload)

    async def _stream(self, chat: ChatRequest, prepared: PreparedGeneration, completion_id: str, request_id: str,
                      events: AsyncIterator[tuple[int, ToolRunEvent]], context: grpc.aio.ServicerContext,
                      run: PipelineRun, headers: dict[str, str],
                      meter: RequestMeter) -> AsyncIterator[httpbody_pb2.HttpBody]:
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
        await send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})
        # the public model that served it: known now (a fallback before the first token changes it)
        frames = ChunkFrames(completion_id, int(time.time()), prepared.entry.name, chat.include_usage)
        chunk = frames.chunk
        texts = TokenTexts.of(prepared.tokenizer) if chat.logprobs else None
        for index in range(chat.n):
            yield sse(chunk({"role": "assistant", "content": ""}, index=index))
        item: tuple[int, ToolRunEvent] | None = first
        finished: list[Finished] = []
        try:
            while item is not None:
                index, event = item
                if isinstance(event, TextDelta):
                    if event.text:
                        yield frames.text(event.text, index)
                elif isinstance(event, TokenLogprobs):
                    if texts is not None:
                        yield sse(chunk({}, index=index, logprobs={"content": chat_content([event], texts),
                                                                   "refusal": None}))
                elif isinstance(event, ToolCallsReady):
                    for number, call in enumerate(event.calls):  # as OpenAI streams them: name, then arguments
                        yield sse(chunk({"tool_calls": [{"index": number, "id": call.id, "type": "function",
                                                          "function": {"name": call.name, "arguments": ""}}]},
                                        index=index))
                        for fragment in call.fragments:
                            yield sse(chunk({"tool_calls": [{"index": number, "function": {"arguments": fragment}}]},
                                            index=index))
                elif isinstance(event, ToolCallsRejected):
                    yield sse(chunk({"invalid_tool_calls": [error.as_openai() for error in event.errors]},
                                    index=index))
                elif isinstance(event, Finished):
                    finished.append(event)
                    final = chunk({}, event.reason, index=index)
                    run.finished(event.reason, event.categories)
                    if run.citations is not None:
                        final["citations"] = run.citations  # extension: in the final chunk, as on the JSON answer
                    yield sse(final)
                    if len(finished) == chat.n:
                        if chat.include_usage:
                            yield sse(frames.usage(total_usage(finished).as_openai()))
                        yield sse("[DONE]")
                        return
                item = await anext(events, None)  # ServerToolRan: server-side rounds are not streamed
        except ApiError as error:
            meter.fail(error.status)
            yield sse(error.body())
        except Exception:
            log.exception("request %s failed mid-stream", request_id)
            meter.fail(500)
            yield sse(internal().body())
