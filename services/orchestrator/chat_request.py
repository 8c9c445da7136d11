"""The orchestrator's internal chat request, and its strict parser for OpenAI `/v1/chat/completions` JSON.

Every rejection is an OpenAI-shaped 400 naming the offending parameter; nothing reaches the model unless the whole
request is valid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import ApiError, invalid
from services.orchestrator.structured_output import ResponseFormat, parse_response_format
from services.orchestrator.tools.spec import (
    ToolChoice,
    ToolSpec,
    parse_assistant_tool_calls,
    parse_parallel_tool_calls,
    parse_server_tools,
    parse_tool_choice,
    parse_tools,
)
from services.retrieval.collection_names import NAME_PATTERN, NAME_RULE

ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_STOP_SEQUENCES = 4
MAX_RETRIEVAL_COLLECTIONS = 8
MAX_RETRIEVAL_TOP_K = 20
DEFAULT_RETRIEVAL_TOP_K = 4
_COLLECTION = NAME_PATTERN  # a collection name as the retrieval service accepts it

# The fields this endpoint implements. Anything else (an OpenAI field Sluice does not implement, such as
# `logit_bias`, `reasoning_effort` or `prediction`, or a name nobody defines) is one 400 `unsupported_parameter`
# naming it: nothing is silently ignored.
KNOWN_FIELDS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty", "user", "response_format",
    "logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls", "store", "service_tier", "metadata",
    "top_k", "repetition_penalty", "min_tokens", "persona",
    "server_tools",  # Sluice extension: tools the orchestrator runs itself (services/orchestrator/tools/registry.py)
    "retrieval",  # Sluice extension: {"collections": [...], "top_k": 4} — the retrieve stage (pipeline/retrieve.py)
}
MAX_N = 8
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512  # OpenAI's limits
MAX_TOP_LOGPROBS = 20
SERVICE_TIERS = ("auto", "default")  # one tier here; "flex", "priority" and "scale" are refused


def unsupported(name: str, detail: str = "") -> ApiError:
    return invalid(f"'{name}' is not supported by this deployment{detail}.", name, "unsupported_parameter")


def refuse_unsupported(body: dict[str, Any], known: set[str]) -> None:
    """The one rule for what is not implemented: 400 unsupported_parameter naming the first such field. A field
    sent empty (null, [], {}) asks for nothing and is accepted."""
    extra = sorted(name for name in set(body) - known if body[name] not in (None, [], {}))
    if extra:
        raise unsupported(extra[0])


@dataclass(slots=True)
class ChatMessage:
    role: str
    content: str
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # assistant turns: OpenAI-shaped calls, arguments as JSON text
    tool_call_id: str | None = None  # tool turns: the call this message answers

    def as_template_dict(self) -> dict[str, Any]:
        # developer messages are system messages for templates that predate the role
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.content}
        if self.name:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    """The `retrieval` extension: search these collections for the latest user turn and ground the answer."""

    collections: tuple[str, ...]
    top_k: int = DEFAULT_RETRIEVAL_TOP_K


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    persona: str | None = None  # a named system prompt + sampling defaults from the catalog
    explicit: frozenset[str] = frozenset()  # the sampling fields the client set (persona defaults fill the rest)
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=lambda: ToolChoice("none"))
    parallel_tool_calls: bool = True
    server_tools: list[str] = field(default_factory=list)
    retrieval: RetrievalOptions | None = None
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1
    prompt_ids: tuple[int, ...] | None = None  # /v1/completions: the prompt as tokens (no chat template)
    raw_prompt: bool = False  # /v1/completions: messages[0].content is the whole prompt, encoded as is
    metadata: dict[str, str] | None = None  # kept with the request's usage record (tenancy/usage.py)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"Invalid type for '{name}': expected a number, but got {type(value).__name__}.", name,
                      "invalid_type")
    if not low <= value <= high:
        raise invalid(f"Invalid '{name}': {value} is not between {low} and {high}.", name, "invalid_value")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"Invalid type for '{name}': expected an integer, but got {type(value).__name__}.", name,
                      "invalid_type")
    if not low <= value <= high:
        raise invalid(f"Invalid '{name}': {value} is not between {low} and {high}.", name, "invalid_value")
    return value


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    param = f"messages.[{index}].content"
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid("Only text content parts are supported by this model.", param, "invalid_value")
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(f"Invalid type for '{param}': expected a string or an array of text parts.", param, "invalid_type")


def _messages(body: dict[str, Any]) -> list[ChatMessage]:
    raw = body.get("messages")
    if raw is None:
        raise invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'messages': expected an array.", "messages", "invalid_type")
    if not raw:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages",
                      "empty_array")
    messages: list[ChatMessage] = []
    open_calls: set[str] = set()  # ids of the latest assistant tool calls that tool messages may answer
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise invalid(f"Invalid type for 'messages.[{index}]': expected an object.", f"messages.[{index}]",
                          "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"Invalid value for 'messages.[{index}].role': {role!r}. Supported values are: "
                          f"{', '.join(sorted(ROLES))}.", f"messages.[{index}].role", "invalid_value")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid(f"Invalid type for 'messages.[{index}].name': expected a string.",
                          f"messages.[{index}].name", "invalid_type")
        tool_calls, tool_call_id = _tool_fields(message, index, open_calls)
        messages.append(ChatMessage(role=role, content=_content(message, index), name=name, tool_calls=tool_calls,
                                    tool_call_id=tool_call_id))
    return messages


def _tool_fields(message: dict[str, Any], index: int,
                 open_calls: set[str]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Assistant `tool_calls` and tool `tool_call_id`, with OpenAI's rule that a tool message answers a call of the
    assistant message before it."""
    role = message["role"]
    raw_calls = message.get("tool_calls")
    if raw_calls is not None and role != "assistant":
        raise invalid(f"Invalid 'messages.[{index}].tool_calls': only assistant messages carry tool calls.",
                      f"messages.[{index}].tool_calls", "invalid_value")
    if role != "tool":
        open_calls.clear()
        if not raw_calls:
            return None, None
        calls = parse_assistant_tool_calls(raw_calls, f"messages.[{index}].tool_calls")
        open_calls.update(call["id"] for call in calls)
        return calls, None
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"Missing required parameter: 'messages.[{index}].tool_call_id'.",
                      f"messages.[{index}].tool_call_id", "missing_required_parameter")
    if call_id not in open_calls:
        raise invalid(f"Invalid parameter: messages with role 'tool' must be a response to a preceding message with "
                      f"'tool_calls' (no call has id {call_id!r}).", f"messages.[{index}].tool_call_id",
                      "invalid_value")
    return None, call_id


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("Invalid type for 'stop': expected a string or an array of strings.", "stop", "invalid_type")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise invalid(f"Invalid 'stop': at most {MAX_STOP_SEQUENCES} sequences are allowed.", "stop", "invalid_value")
    if any(s == "" for s in stop):
        raise invalid("Invalid 'stop': stop sequences must not be empty.", "stop", "invalid_value")
    return stop


def parse_retrieval(raw: Any) -> RetrievalOptions | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("Invalid type for 'retrieval': expected an object like {\"collections\": [\"docs\"], "
                      "\"top_k\": 4}.", "retrieval", "invalid_type")
    unknown = sorted(set(raw) - {"collections", "top_k"})
    if unknown:
        raise invalid(f"'retrieval.{unknown[0]}' is not supported by this deployment.", f"retrieval.{unknown[0]}",
                      "unsupported_parameter")
    collections = raw.get("collections")
    if collections is None:
        raise invalid("Missing required parameter: 'retrieval.collections'.", "retrieval.collections",
                      "missing_required_parameter")
    if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
        raise invalid("Invalid type for 'retrieval.collections': expected an array of strings.",
                      "retrieval.collections", "invalid_type")
    if not 1 <= len(collections) <= MAX_RETRIEVAL_COLLECTIONS:
        raise invalid(f"Invalid 'retrieval.collections': expected 1 to {MAX_RETRIEVAL_COLLECTIONS} collections.",
                      "retrieval.collections", "invalid_value")
    for name in collections:
        if not _COLLECTION.fullmatch(name):
            raise invalid(f"Invalid 'retrieval.collections': {name!r} is not a collection name ({NAME_RULE}).",
                          "retrieval.collections", "invalid_value")
    top_k = raw.get("top_k")
    if top_k is None:
        top_k = DEFAULT_RETRIEVAL_TOP_K
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise invalid("Invalid type for 'retrieval.top_k': expected an integer.", "retrieval.top_k", "invalid_type")
    if not 1 <= top_k <= MAX_RETRIEVAL_TOP_K:
        raise invalid(f"Invalid 'retrieval.top_k': {top_k} is not between 1 and {MAX_RETRIEVAL_TOP_K}.",
                      "retrieval.top_k", "invalid_value")
    return RetrievalOptions(tuple(dict.fromkeys(collections)), top_k)


MAX_JSON_DEPTH = 64  # nesting of objects and arrays; deeper bodies would exhaust recursion (json, jsonschema)
_LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: JSON can spell what UTF-8 cannot


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_json_shape(body: Any, data: bytes) -> None:
    """Refuses nesting deeper than MAX_JSON_DEPTH and strings holding lone surrogates (valid JSON escapes that no
    UTF-8 encoder, tokenizer or protobuf string accepts). Each check runs only when the raw bytes make it possible."""
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
        level, depth = [body], 1
        while level:
            if depth > MAX_JSON_DEPTH:
                raise invalid(f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.", None, "invalid_json")
            level = [child for value in level for child in (value.values() if isinstance(value, dict) else value)
                     if isinstance(child, dict | list)]
            depth += 1
    if _LONE_SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise invalid("The JSON body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
                          "valid Unicode text.", None, "invalid_json") from None


def parse_json_body(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data, parse_constant=_reject_constant)  # NaN / Infinity are not JSON
    except (UnicodeDecodeError, ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
        raise invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                      "your HTTP library correctly. The OpenAI API expects a JSON payload.)", None,
                      "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    _check_json_shape(body, data)
    return body


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    refuse_unsupported(body, KNOWN_FIELDS)
    model = parse_model(body)
    check_store_and_tier(body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                          "stream_options", "invalid_value")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise invalid("Invalid 'stream_options': expected {\"include_usage\": boolean}.", "stream_options",
                          "invalid_type")
        include_usage = bool(options.get("include_usage", False))
    response_format = parse_response_format(body.get("response_format"))
    stop = _stop(body)
    if response_format.constrained and stop:
        raise unsupported("stop", " together with a JSON response_format (a stop string would cut the JSON)")
    logprobs, top_logprobs = parse_logprobs(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("Invalid type for 'user': expected a string.", "user", "invalid_type")
    legacy_max_tokens = _integer(body, "max_tokens", 1, 1 << 20)
    max_tokens = _integer(body, "max_completion_tokens", 1, 1 << 20)
    if max_tokens is None:
        max_tokens = legacy_max_tokens
    tools = parse_tools(body.get("tools"))
    server_tools = parse_server_tools(body.get("server_tools"))
    tool_choice = parse_tool_choice(body.get("tool_choice"), {t.name for t in tools} | set(server_tools))
    if response_format.constrained and tool_choice.mode != "none":
        raise unsupported("response_format", " together with tools (a tool call is constrained by its own schema)")
    return ChatRequest(
        model=model,
        messages=_messages(body),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        top_k=_integer(body, "top_k", 0, 1 << 20) or 0,
        seed=_integer(body, "seed", -(2**63), 2**63 - 1),
        stop=stop,
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.01, 10.0),
        min_tokens=_integer(body, "min_tokens", 0, 1 << 20) or 0,
        stream=stream,
        include_usage=include_usage,
        user=user,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parse_parallel_tool_calls(body.get("parallel_tool_calls")),
        server_tools=server_tools,
        retrieval=parse_retrieval(body.get("retrieval")),
        persona=_persona(body),
        explicit=frozenset(key for key in PERSONA_DEFAULTABLE if body.get(key) is not None),
        response_format=response_format,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        n=_integer(body, "n", 1, MAX_N) or 1,
        metadata=parse_metadata(body.get("metadata")),
    )


def parse_metadata(raw: Any) -> dict[str, str] | None:
    """OpenAI `metadata`: up to 16 string pairs, stored with the usage record of the request."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise invalid("Invalid type for 'metadata': expected an object of string keys and string values.",
                      "metadata", "invalid_type")
    if len(raw) > MAX_METADATA_PAIRS or any(len(k) > MAX_METADATA_KEY or len(v) > MAX_METADATA_VALUE
                                            for k, v in raw.items()):
        raise invalid(f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} pairs, keys of at most {MAX_METADATA_KEY} "
                      f"and values of at most {MAX_METADATA_VALUE} characters.", "metadata", "invalid_value")
    return dict(raw)


def parse_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("Invalid type for 'model': expected a non-empty string.", "model", "invalid_type")
    return model


def check_store_and_tier(body: dict[str, Any]) -> None:
    """`store: false` and `service_tier: auto/default` describe what Sluice does anyway; anything else is refused."""
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise invalid("Invalid type for 'store': expected a boolean.", "store", "invalid_type")
    if store:
        raise unsupported("store", " (completions are not stored for later retrieval; use the Conversations API)")
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise unsupported("service_tier", f": {tier!r} (accepted: {', '.join(SERVICE_TIERS)})")


def parse_logprobs(body: dict[str, Any]) -> tuple[bool, int]:
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise invalid("Invalid type for 'logprobs': expected a boolean.", "logprobs", "invalid_type")
    top = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top is not None and not logprobs:
        raise invalid("Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
                      "top_logprobs", "invalid_value")
    return bool(logprobs), top or 0


PERSONA_DEFAULTABLE = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
                       "frequency_penalty")


def _persona(body: dict[str, Any]) -> str | None:
    persona = body.get("persona")
    if persona is not None and (not isinstance(persona, str) or not persona):
        raise invalid("Invalid type for 'persona': expected a non-empty string.", "persona", "invalid_type")
    return persona

