"""What every OpenAI-facade endpoint answers with: JSON bodies, the response headers (the HTTP status travels as
`x-http-status`, which Envoy's Lua filter turns into `:status`) and OpenAI-shaped errors."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import grpc
from google.api import httpbody_pb2

from services.common.errors import ApiError
from services.common.telemetry import current_request
from services.orchestrator.chat_request import ChatRequest

JSON = "application/json"


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and value:
            return value
    state = current_request.get()  # the id the telemetry interceptor gave a call that came without one
    return state.request_id if state is not None else str(uuid.uuid4())


def last_user_text(chat: ChatRequest | None) -> str | None:
    """What the audit log hashes for a safety event: the newest user turn."""
    if chat is None:
        return None
    return next((m.content for m in reversed(chat.messages) if m.role == "user"), None)


def json_body(payload: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=JSON, data=json.dumps(payload, ensure_ascii=False).encode())


async def send_headers(context: grpc.aio.ServicerContext, request_id: str, status: int = 200,
                        extra: dict[str, str] | None = None) -> None:
    headers = {"x-request-id": request_id, "x-http-status": str(status), **(extra or {})}
    await context.send_initial_metadata(tuple(headers.items()))


async def error_response(context: grpc.aio.ServicerContext, request_id: str, error: ApiError,
                         headers: dict[str, str] | None = None) -> httpbody_pb2.HttpBody:
    extra = dict(headers or {})
    if error.retry_after:
        extra["retry-after"] = str(math.ceil(error.retry_after))
    await send_headers(context, request_id, error.status, extra)
    return json_body(error.body())
