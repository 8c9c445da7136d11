"""POST /v1/responses, OpenAI's Responses API, on the chat-completions path: the input items (and the chain behind
`previous_response_id`) become chat messages that the chat parser validates, `instructions` a system message,
function tools and `text.format` the chat fields they mirror. Answers are `response` objects; a stream is OpenAI's
typed events (response.created, response.output_item.added, response.output_text.delta, ...,
response.completed), each an SSE frame with its `event:` line and a `sequence_number`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from google.api import httpbody_pb2

from services.common.errors import ApiError, invalid
from services.orchestrator.chat_request import (
    ChatRequest,
    parse_chat_request,
    parse_json_body,
    refuse_unsupported,
    unsupported,
)
from services.orchestrator.choices import ChoiceResult
from services.orchestrator.generate import Finished, PreparedGeneration, TextDelta, Usage
from services.orchestrator.generation_api import GenerationApi
from services.orchestrator.http_replies import error_response, json_body, last_user_text, request_id_of, send_headers
from services.orchestrator.pipeline.pipeline import tenant_of
from services.orchestrator.response_chain import ResponseChain, previous_not_found, response_id
from services.orchestrator.sse_frames import SSE
from services.orchestrator.tenancy.metering import begin_request
from services.orchestrator.tenancy.principal import current_principal
from services.orchestrator.tools.parser import ToolCall
from services.orchestrator.tools.runner import ToolCallsReady, ToolRunEvent

KNOWN_FIELDS = {
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream", "tools", "tool_choice",
    "parallel_tool_calls", "previous_response_id", "text", "user", "store", "service_tier", "metadata",
}


@dataclass(slots=True)
class ResponsesRequest:
    chat: ChatRequest  # history + input, validated by the chat parser
    instructions: str | None
    history: list[dict[str, Any]]  # chat-form messages from the chain
    new_messages: list[dict[str, Any]]  # chat-form messages of this request's input (stored with the answer)
    store: bool
    body: dict[str, Any] = field(default_factory=dict)


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text") \
                    or not isinstance(part.get("text"), str):
                raise invalid(f"Invalid '{where}': only text content parts (input_text) are supported.", where,
                              "invalid_value")
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(f"Invalid type for '{where}': expected a string or an array of input_text parts.", where,
                  "invalid_type")


def input_messages(raw: Any) -> list[dict[str, Any]]:
    """The input (a string or a list of items) as chat-form messages."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise invalid("Invalid 'input': expected a string or a non-empty array of input items.", "input",
                      "invalid_type")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _content_text(item.get("content"), where)})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else _content_text(output, where)})
        else:
            raise unsupported(where, f" (input items of type {kind!r})")
    return messages


def _chat_tools(raw: Any) -> Any:
    """Responses function tools ({"type": "function", "name", "parameters", ...}) in chat form."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    tools = []
    for index, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise unsupported(f"tools[{index}]", f" (tools of type {kind!r}; function tools are)")
        tools.append({"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}})
    return tools


def _chat_tool_choice(raw: Any) -> Any:
    if isinstance(raw, dict) and raw.get("type") == "function" and "name" in raw:
        return {"type": "function", "function": {"name": raw["name"]}}
    return raw


def _response_format(text: Any) -> Any:
    if text is None:
        return None
    if not isinstance(text, dict) or set(text) - {"format"}:
        raise unsupported("text", " (only text.format)")
    fmt = text.get("format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return fmt
    return {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}


def parse_responses_request(body: dict[str, Any], history: list[dict[str, Any]]) -> ResponsesRequest:
    refuse_unsupported(body, KNOWN_FIELDS)
    if body.get("input") is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("Invalid type for 'instructions': expected a string.", "instructions", "invalid_type")
    new_messages = input_messages(body["input"])
    system = [{"role": "system", "content": instructions}] if instructions else []
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise invalid("Invalid type for 'store': expected a boolean.", "store", "invalid_type")
    chat_body = {
        "model": body.get("model"), "messages": [*system, *history, *new_messages],
        "max_completion_tokens": body.get("max_output_tokens"), "temperature": body.get("temperature"),
        "top_p": body.get("top_p"), "stream": body.get("stream"), "tools": _chat_tools(body.get("tools")),
        "tool_choice": _chat_tool_choice(body.get("tool_choice")),
        "parallel_tool_calls": body.get("parallel_tool_calls"), "user": body.get("user"),
        "response_format": _response_format(body.get("text")), "service_tier": body.get("service_tier"),
        "metadata": body.get("metadata"),
    }
    try:
        chat = parse_chat_request({k: v for k, v in chat_body.items() if v is not None})
    except ApiError as error:
        raise _in_responses_terms(error) from None
    return ResponsesRequest(chat, instructions, history, new_messages, store, body)


# The chat parser's parameter names for this API's fields.
_CHAT_NAMES = (("max_completion_tokens", "max_output_tokens"), ("response_format.json_schema", "text.format"),
               ("response_format", "text.format"), ("messages", "input"))


def _in_responses_terms(error: ApiError) -> ApiError:
    """A chat-parser refusal named with the Responses API's fields (`max_output_tokens`, `text.format`, `input`)."""
    param, message = error.param, error.message
    for chat_name, name in _CHAT_NAMES:
        if param is not None and param.startswith(chat_name):
            param = name + param[len(chat_name):]
        message = message.replace(f"'{chat_name}", f"'{name}")
    return dataclasses.replace(error, param=param, message=message)


def _usage(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    parts = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": parts if status == "completed" or text else []}


def _call_item(call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call.id.removeprefix('call_')}", "call_id": call.id,
            "name": call.name, "arguments": call.arguments if arguments is None else arguments, "status": status}


class ResponsesApi:
    """Renders one /v1/responses request's events as a response object or its typed stream events."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.response_id = f"resp_{uuid.uuid4().hex}"  # the chain's id when the response is stored (response_chain)
        self.created = time.time()
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self._sequence = 0

    def response(self, model: str, status: str, output: list[dict[str, Any]],
                 usage: Usage | None, incomplete: str | None = None) -> dict[str, Any]:
        body, chat = self.request.body, self.request.chat
        choice = chat.tool_choice
        return {
            "id": self.response_id, "object": "response", "created_at": self.created, "status": status,
            "error": None, "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": self.request.instructions, "max_output_tokens": chat.max_tokens, "model": model,
            "output": output, "parallel_tool_calls": chat.parallel_tool_calls,
            "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
            "service_tier": "default", "store": self.request.store, "temperature": chat.temperature,
            "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
            "tool_choice": {"type": "function", "name": choice.name} if choice.mode == "function" else choice.mode,
            "tools": body.get("tools") or [], "top_p": chat.top_p, "truncation": "disabled",
            "usage": _usage(usage) if usage is not None else None, "user": chat.user,
            "metadata": chat.metadata or {},
        }

    @staticmethod
    def status_of(finished: Finished) -> tuple[str, str | None]:
        if finished.reason == "length":
            return "incomplete", "max_output_tokens"
        if finished.reason == "content_filter":
            return "incomplete", "content_filter"
        return "completed", None

    def output(self, result: ChoiceResult) -> list[dict[str, Any]]:
        items = []
        if result.text or not result.tool_calls:
            items.append(_message_item(self.message_id, result.text, "completed"))
        items.extend(_call_item(call, "completed") for call in result.tool_calls)
        return items

    def answer_message(self, result: ChoiceResult) -> dict[str, Any]:
        """The answer in chat form, as the chain stores it."""
        message: dict[str, Any] = {"role": "assistant", "content": result.text,
                                   "finish": result.finished.reason if result.finished else None}
        if result.tool_calls:
            message["tool_calls"] = [call.as_openai() for call in result.tool_calls]
        return message

    def complete(self, result: ChoiceResult, model: str) -> dict[str, Any]:
        status, incomplete = self.status_of(result.finished)
        return self.response(model, status, self.output(result), result.finished.usage, incomplete)

    def event(self, kind: str, payload: dict[str, Any]) -> httpbody_pb2.HttpBody:
        data = orjson.dumps({"type": kind, "sequence_number": self._sequence, **payload})
        self._sequence += 1
        return httpbody_pb2.HttpBody(content_type=SSE, data=b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

    def opening(self, model: str) -> list[httpbody_pb2.HttpBody]:
        response = self.response(model, "in_progress", [], None)
        return [self.event("response.created", {"response": response}),
                self.event("response.in_progress", {"response": response})]

    async def stream(self, events: AsyncIterator[tuple[int, Any]], model: str,
                     result: ChoiceResult) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """The typed events after `opening`; `result` collects the answer (stored by the caller). The final
        response.completed is left to the caller, which first stores the answer and learns its id."""
        text_open = False
        index = 0
        async for _, event in events:
            result.take(event)
            if isinstance(event, TextDelta) and event.text:
                if not text_open:
                    text_open = True
                    yield self.event("response.output_item.added", {"output_index": index, "item": _message_item(
                        self.message_id, "", "in_progress")})
                    yield self.event("response.content_part.added", {
                        "item_id": self.message_id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
                yield self.event("response.output_text.delta", {
                    "item_id": self.message_id, "output_index": index, "content_index": 0, "delta": event.text,
                    "logprobs": []})
            elif isinstance(event, ToolCallsReady | Finished) and text_open:
                text_open = False
                for frame in self._close_text(index, result.text):
                    yield frame
                index += 1
            if isinstance(event, ToolCallsReady):
                for call in event.calls:
                    item = _call_item(call, "in_progress", "")
                    yield self.event("response.output_item.added", {"output_index": index, "item": item})
                    for fragment in call.fragments:
                        yield self.event("response.function_call_arguments.delta", {
                            "item_id": item["id"], "output_index": index, "delta": fragment})
                    yield self.event("response.function_call_arguments.done", {
                        "item_id": item["id"], "output_index": index, "name": call.name,
                        "arguments": call.arguments})
                    yield self.event("response.output_item.done", {"output_index": index,
                                                                   "item": _call_item(call, "completed")})
                    index += 1

    def _close_text(self, index: int, text: str) -> list[httpbody_pb2.HttpBody]:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return [
            self.event("response.output_text.done", {"item_id": self.message_id, "output_index": index,
                                                     "content_index": 0, "text": text, "logprobs": []}),
            self.event("response.content_part.done", {"item_id": self.message_id, "output_index": index,
                                                      "content_index": 0, "part": part}),
            self.event("response.output_item.done", {"output_index": index,
                                                     "item": _message_item(self.message_id, text, "completed")}),
        ]

    def closing(self, result: ChoiceResult, model: str) -> httpbody_pb2.HttpBody:
        status, incomplete = self.status_of(result.finished)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return self.event(kind, {"response": self.response(model, status, self.output(result),
                                                           result.finished.usage, incomplete)})


class ResponsesEndpoint(GenerationApi):
    """POST /v1/responses, mixed into the OpenAI facade; `chain` keeps responses for previous_response_id."""

    chain: ResponseChain | None

    async def Responses(self, request: httpbody_pb2.HttpBody,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
        request_id = request_id_of(context)
        meter = begin_request(self.metering, current_principal.get(), endpoint="responses", request_id=request_id)
        meter.activate()
        events: AsyncIterator[tuple[int, ToolRunEvent]] | None = None
        prepared: PreparedGeneration | None = None
        reserved: str | None = None  # the stored response's conversation, until the answer is written into it
        parsed: ResponsesRequest | None = None
        try:
            try:
                body = parse_json_body(request.data)
                tenant = tenant_of(context)
                history: list[dict[str, Any]] = []
                if body.get("previous_response_id") is not None:
                    if self.chain is None or not isinstance(body["previous_response_id"], str):
                        raise previous_not_found(str(body["previous_response_id"]))
                    history = await asyncio.to_thread(self.chain.history, tenant, body["previous_response_id"])
                parsed = parse_responses_request(body, history)
                meter.model, meter.user, meter.metadata = parsed.chat.model, parsed.chat.user, parsed.chat.metadata
                chat, prepared, run = await self._admit(parsed.chat, meter, context, request_id)
            except ApiError as error:
                yield await self._refusal(error, meter, context, request_id, parsed.chat if parsed else None)
                return
            api = ResponsesApi(parsed)
            if self.chain is not None and parsed.store:
                reserved = await asyncio.to_thread(self.chain.reserve, tenant, prepared.entry.name, chat.user)
                api.response_id = response_id(reserved)
            events = self.choice_events(chat, prepared, run, request_id)
            headers = meter.rate_limit_headers
            result = ChoiceResult()
            if not chat.stream:
                (result,) = await self._collect(events, 1, run)
                await self._store_response(parsed, result, tenant, reserved)
                reserved = None  # stored: kept
                await send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})
                yield json_body(api.complete(result, prepared.entry.name))
            else:
                started, refusal = await self._start_stream(events, context, request_id, headers, meter, prepared,
                                                            run)
                if refusal is not None:
                    yield refusal
                    return
                for frame in api.opening(prepared.entry.name):
                    yield frame
                try:
                    async for frame in api.stream(started, prepared.entry.name, result):
                        yield frame
                    await self._store_response(parsed, result, tenant, reserved)
                    reserved = None  # stored: kept
                    yield api.closing(result, prepared.entry.name)
                except Exception as exc:
                    error = self._stream_failure(exc, meter, request_id)
                    yield api.event("error", {"code": error.code, "message": error.message, "param": error.param})
            if run.blocked_by_output is not None:
                await meter.safety_blocked("output_guard", run.blocked_by_output, last_user_text(chat))
        except ApiError as error:
            meter.fail(error.status)
            yield await error_response(context, request_id, error, meter.rate_limit_headers)
        except (asyncio.CancelledError, GeneratorExit):
            meter.cancelled = True
            raise
        finally:
            if reserved is not None and self.chain is not None:  # no answer to store: the id never existed
                await asyncio.to_thread(self.chain.forget, tenant, reserved)
            await self._finish(events, prepared, meter)

    async def _store_response(self, parsed: ResponsesRequest, result: ChoiceResult, tenant: str,
                              reserved: str | None) -> None:
        """Writes the history, the input and the answer into the response's reserved conversation."""
        if reserved is None or self.chain is None:
            return
        usage = result.finished.usage
        messages = [*parsed.history, *parsed.new_messages, ResponsesApi(parsed).answer_message(result)]
        await asyncio.to_thread(self.chain.save, tenant, reserved, messages,
                                (usage.prompt_tokens, usage.completion_tokens))
