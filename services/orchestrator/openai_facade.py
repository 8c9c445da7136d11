"""The OpenAI-compatible facade: HttpBody JSON in, JSON or Server-Sent Events out (Envoy transcodes to HTTP).

The HTTP status travels as the `x-http-status` response header, which Envoy's Lua filter turns into `:status`, so
errors reach OpenAI SDKs in OpenAI's shape and status codes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from sluice.v1 import openai_pb2, openai_pb2_grpc

from services.common.errors import ApiError, internal
from services.orchestrator.catalog import ModelCatalog
from services.orchestrator.chat_request import ChatRequest, parse_chat_request, parse_json_body
from services.orchestrator.generate import Finished, Generator, PreparedGeneration, TextDelta

log = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and value:
            return value
    return str(uuid.uuid4())


def _json_body(payload: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=JSON, data=json.dumps(payload, ensure_ascii=False).encode())


def _sse(payload: dict[str, Any] | str) -> httpbody_pb2.HttpBody:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return httpbody_pb2.HttpBody(content_type=SSE, data=f"data: {data}\n\n".encode())


async def _send_headers(context: grpc.aio.ServicerContext, request_id: str, status: int = 200,
                        extra: dict[str, str] | None = None) -> None:
    headers = {"x-request-id": request_id, "x-http-status": str(status), **(extra or {})}
    await context.send_initial_metadata(tuple(headers.items()))


async def error_response(context: grpc.aio.ServicerContext, request_id: str, error: ApiError) -> httpbody_pb2.HttpBody:
    extra = {"retry-after": str(int(error.retry_after + 0.999))} if error.retry_after else {}
    await _send_headers(context, request_id, error.status, extra)
    return _json_body(error.body())


class OpenAIFacade(openai_pb2_grpc.OpenAIServicer):
    def __init__(self, catalog: ModelCatalog, generator: Generator) -> None:
        self.catalog = catalog
        self.generator = generator

    async def ListModels(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        await _send_headers(context, request_id_of(context))
        return _json_body({"object": "list", "data": [entry.as_openai() for entry in self.catalog.list()]})

    async def RetrieveModel(self, request: openai_pb2.RetrieveModelRequest,
                            context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        request_id = request_id_of(context)
        try:
            entry = self.catalog.get(request.model)
        except ApiError as error:
            return await error_response(context, request_id, error)
        await _send_headers(context, request_id)
        return _json_body(entry.as_openai())

    async def ChatCompletions(self, request: httpbody_pb2.HttpBody,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        request_id = request_id_of(context)
        try:
            chat = parse_chat_request(parse_json_body(request.data))
            prepared = self.generator.prepare(chat)
        except ApiError as error:
            yield await error_response(context, request_id, error)
            return
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        events = self.generator.run(prepared, request_id)
        try:
            if chat.stream:
                async for frame in self._stream(chat, prepared, completion_id, request_id, events, context):
                    yield frame
            else:
                yield await self._complete(chat, prepared, completion_id, request_id, events, context)
        finally:
            await events.aclose()

    async def _complete(self, chat: ChatRequest, prepared: PreparedGeneration, completion_id: str, request_id: str,
                        events: AsyncIterator[TextDelta | Finished],
                        context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        parts: list[str] = []
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                else:
                    finished = event
        except ApiError as error:
            return await error_response(context, request_id, error)
        except Exception:
            log.exception("request %s failed", request_id)
            return await error_response(context, request_id, internal())
        await _send_headers(context, request_id, extra={"x-sluice-model": prepared.entry.name})
        return _json_body({
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": chat.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
                         "logprobs": None, "finish_reason": finished.reason}],
            "usage": finished.usage.as_openai(),
        })

    async def _stream(self, chat: ChatRequest, prepared: PreparedGeneration, completion_id: str, request_id: str,
                      events: AsyncIterator[TextDelta | Finished],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": chat.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if chat.include_usage:
                payload["usage"] = None
            return payload

        # Wait for the first event before committing to a 200: a failure before any token is a proper HTTP error.
        try:
            first = await anext(events)
        except ApiError as error:
            yield await error_response(context, request_id, error)
            return
        except Exception:
            log.exception("request %s failed before its first token", request_id)
            yield await error_response(context, request_id, internal())
            return
        await _send_headers(context, request_id, extra={"x-sluice-model": prepared.entry.name})
        yield _sse(chunk({"role": "assistant", "content": ""}))
        event: TextDelta | Finished | None = first
        try:
            while event is not None:
                if isinstance(event, TextDelta):
                    if event.text:
                        yield _sse(chunk({"content": event.text}))
                else:
                    yield _sse(chunk({}, event.reason))
                    if chat.include_usage:
                        yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                    "model": chat.model, "system_fingerprint": None, "choices": [],
                                    "usage": event.usage.as_openai()})
                    yield _sse("[DONE]")
                    return
                event = await anext(events, None)
        except ApiError as error:
            yield _sse(error.body())
        except Exception:
            log.exception("request %s failed mid-stream", request_id)
            yield _sse(internal().body())
