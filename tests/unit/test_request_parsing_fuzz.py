"""The request parsers under hypothesis, in-process: whatever JSON arrives, the answer is a parsed request or an
OpenAI-shaped 4xx ApiError — never another exception, which the facade would turn into a 500. The same property is
checked end to end through Envoy by tests/e2e/test_http_fuzz.py; here it runs in a few seconds without a stack."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import ApiError
from services.orchestrator.chat_request import (
    KNOWN_FIELDS,
    MAX_JSON_DEPTH,
    parse_chat_request,
    parse_json_body,
)
from services.orchestrator.embeddings import parse_embeddings_request

FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(["user", "assistant", "tool", "function", "auto", "text", "\ud800"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=15)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "bot"])},
    optional={"content": values, "name": values, "tool_calls": values, "tool_call_id": values}), max_size=3)
chat_bodies = st.fixed_dictionaries(
    {"model": st.just("sluice-demo") | values, "messages": messages | values},
    optional={name: values for name in sorted(KNOWN_FIELDS - {"model", "messages"})})


def _parses_or_4xx(parse: Any, body: Any) -> None:
    try:
        parse(parse_json_body(json.dumps(body, allow_nan=True).encode()))
    except ApiError as error:
        assert 400 <= error.status < 500
        assert set(error.body()["error"]) == {"message", "type", "param", "code"}


@FUZZ
@given(chat_bodies)
def test_any_chat_body_parses_or_is_a_4xx(body: dict[str, Any]) -> None:
    _parses_or_4xx(parse_chat_request, body)


@FUZZ
@given(st.fixed_dictionaries({"model": st.just("all-MiniLM-L6-v2") | values, "input": values},
                             optional={"encoding_format": values, "dimensions": values, "user": values}))
def test_any_embeddings_body_parses_or_is_a_4xx(body: dict[str, Any]) -> None:
    _parses_or_4xx(parse_embeddings_request, body)


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_json_object_or_a_400(data: bytes) -> None:
    try:
        assert isinstance(parse_json_body(data), dict)
    except ApiError as error:
        assert (error.status, error.code) == (400, "invalid_json")


@pytest.mark.parametrize("data", [
    b"[" * 100_000,  # past the JSON decoder's recursion limit
    b'{"a": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}",  # decodable, but past MAX_JSON_DEPTH
    b'{"model": "\\ud800"}',  # a lone surrogate: no UTF-8 encoder accepts it
    b'{"\\udc00": 1}',
    b'{"messages": [{"content": "x \\udfff"}]}',
    b'{"temperature": NaN}',
    b'{"seed": -Infinity}',
])
def test_bodies_that_would_crash_later_are_refused_at_parse(data: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json_body(data)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")


def test_deep_tool_schemas_within_the_limit_still_parse() -> None:
    parameters: dict[str, Any] = {"type": "object"}
    for _ in range(20):
        parameters = {"type": "object", "properties": {"a": parameters}}
    body = {"model": "sluice-demo", "messages": [{"role": "user", "content": "hi \ud83d\ude00"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]}
    parsed = parse_chat_request(parse_json_body(json.dumps(body).encode()))  # the emoji travels as a surrogate pair
    assert parsed.messages[0].content == "hi \U0001f600" and parsed.tools[0].name == "f"
