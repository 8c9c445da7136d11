"""The strict OpenAI chat request parser: every rejection is a 400 naming the offending parameter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common.errors import ApiError, invalid
from services.orchestrator.chat_request import ChatMessage, parse_chat_request, parse_json_body

TOOL = {"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic.", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+2"}'}}


def make_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sluice-demo", "messages": [{"role": "user", "content": "hi"}]}
    body.update(overrides)
    return body


def rejects(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_chat_request(body)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def test_minimal_request_gets_defaults() -> None:
    request = parse_chat_request(make_body())
    assert request.model == "sluice-demo"
    assert request.messages == [ChatMessage(role="user", content="hi")]
    assert request.max_tokens is None
    assert request.temperature == 1.0
    assert request.top_p == 1.0
    assert request.stop == []
    assert request.stream is False
    assert request.include_usage is False


def test_parse_json_body_accepts_an_object() -> None:
    assert parse_json_body(json.dumps(make_body()).encode()) == make_body()


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_parse_json_body_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(ApiError) as info:
        parse_json_body(data)
    assert (info.value.status, info.value.param, info.value.code) == (400, None, "invalid_json")


@pytest.mark.parametrize("data", [b"[]", b"42", b'"text"', b"null"])
def test_parse_json_body_rejects_non_objects(data: bytes) -> None:
    with pytest.raises(ApiError) as info:
        parse_json_body(data)
    assert (info.value.status, info.value.param, info.value.code) == (400, None, "invalid_json")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", "missing_required_parameter"),
        (make_body(model=""), "model", "invalid_type"),
        (make_body(model=3), "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        (make_body(messages=[]), "messages", "empty_array"),
        (make_body(messages="hi"), "messages", "invalid_type"),
        (make_body(messages={"role": "user", "content": "hi"}), "messages", "invalid_type"),
        (make_body(messages=["hi"]), "messages.[0]", "invalid_type"),
        (make_body(messages=[{"role": "robot", "content": "hi"}]), "messages.[0].role", "invalid_value"),
        (make_body(messages=[{"role": "user", "content": "a"}, {"content": "b"}]), "messages.[1].role",
         "invalid_value"),
        (make_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
         "messages.[0].content", "invalid_value"),
        (make_body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
         "messages.[0].content", "invalid_value"),
        (make_body(messages=[{"role": "user", "content": 5}]), "messages.[0].content", "invalid_type"),
        (make_body(messages=[{"role": "user"}]), "messages.[0].content", "invalid_type"),
        (make_body(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]), "messages.[0].tool_call_id",
         "invalid_value"),
        (make_body(messages=[{"role": "assistant", "content": None, "tool_calls": [CALL]},
                             {"role": "tool", "content": "x"}]), "messages.[1].tool_call_id",
         "missing_required_parameter"),
        (make_body(messages=[{"role": "assistant", "content": None, "tool_calls": [CALL]},
                             {"role": "tool", "content": "x", "tool_call_id": "call_other"}]),
         "messages.[1].tool_call_id", "invalid_value"),
        (make_body(messages=[{"role": "assistant", "content": None, "tool_calls": [CALL]},
                             {"role": "user", "content": "hi"}, {"role": "tool", "content": "x",
                                                                 "tool_call_id": "call_1"}]),
         "messages.[2].tool_call_id", "invalid_value"),
        (make_body(messages=[{"role": "user", "content": "hi", "tool_calls": [CALL]}]), "messages.[0].tool_calls",
         "invalid_value"),
        (make_body(messages=[{"role": "assistant", "tool_calls": [{**CALL, "function": {
            "name": "calculator", "arguments": "{oops"}}]}]), "messages.[0].tool_calls.[0].function.arguments",
         "invalid_value"),
        (make_body(messages=[{"role": "assistant", "tool_calls": [{"type": "function", "function": {
            "name": "calculator", "arguments": "{}"}}]}]), "messages.[0].tool_calls.[0].id",
         "missing_required_parameter"),
        (make_body(temperature=2.5), "temperature", "invalid_value"),
        (make_body(temperature=-0.1), "temperature", "invalid_value"),
        (make_body(temperature="1"), "temperature", "invalid_type"),
        (make_body(temperature=True), "temperature", "invalid_type"),
        (make_body(top_p=1.5), "top_p", "invalid_value"),
        (make_body(top_p=-0.5), "top_p", "invalid_value"),
        (make_body(n=9), "n", "invalid_value"),
        (make_body(n=0), "n", "invalid_value"),
        (make_body(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value"),
        (make_body(stop=""), "stop", "invalid_value"),
        (make_body(stop=["a", ""]), "stop", "invalid_value"),
        (make_body(stop=["a", 1]), "stop", "invalid_type"),
        (make_body(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
        (make_body(stream=False, stream_options={"include_usage": True}), "stream_options", "invalid_value"),
        (make_body(stream=True, stream_options={"include_usage": "yes"}), "stream_options", "invalid_type"),
        (make_body(stream="true"), "stream", "invalid_type"),
        (make_body(frobnicate=1), "frobnicate", "unsupported_parameter"),
        (make_body(reasoning_effort="low"), "reasoning_effort", "unsupported_parameter"),
        (make_body(prediction={"type": "content", "content": "x"}), "prediction", "unsupported_parameter"),
        (make_body(logit_bias={"5": 1}), "logit_bias", "unsupported_parameter"),
        (make_body(metadata={"a": 1}), "metadata", "invalid_type"),
        (make_body(metadata={str(i): "v" for i in range(17)}), "metadata", "invalid_value"),
        (make_body(store=True), "store", "unsupported_parameter"),
        (make_body(service_tier="flex"), "service_tier", "unsupported_parameter"),
        (make_body(top_logprobs=3), "top_logprobs", "invalid_value"),
        (make_body(logprobs=True, top_logprobs=21), "top_logprobs", "invalid_value"),
        (make_body(response_format={"type": "json_object"}, stop=["}"]), "stop", "unsupported_parameter"),
        (make_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "objekt"}}}), "response_format.json_schema.schema", "invalid_json_schema"),
        (make_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "string", "pattern": "(?=a)"}}}), "response_format.json_schema.schema", "invalid_json_schema"),
        (make_body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
         "response_format.json_schema.name", "invalid_value"),
        (make_body(response_format={"type": "xml"}), "response_format", "invalid_value"),
        (make_body(tools=[{"type": "retrieval"}]), "tools", "invalid_value"),
        (make_body(tools={"type": "function"}), "tools", "invalid_type"),
        (make_body(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools", "invalid_value"),
        (make_body(tools=[TOOL, TOOL]), "tools", "invalid_value"),
        (make_body(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]),
         "tools", "invalid_function_parameters"),
        (make_body(tools=[{"type": "function", "function": {"name": "f", "parameters": {"required": "x"}}}]),
         "tools", "invalid_function_parameters"),
        (make_body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools",
         "invalid_type"),
        (make_body(tools=[TOOL], tool_choice="sometimes"), "tool_choice", "invalid_value"),
        (make_body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "weather"}}), "tool_choice",
         "invalid_value"),
        (make_body(tools=[TOOL], tool_choice={"type": "function"}), "tool_choice", "invalid_type"),
        (make_body(tool_choice="required"), "tool_choice", "invalid_value"),
        (make_body(tools=[TOOL], parallel_tool_calls="no"), "parallel_tool_calls", "invalid_type"),
        (make_body(server_tools="calculator"), "server_tools", "invalid_type"),
        (make_body(server_tools=["calculator", "calculator"]), "server_tools", "invalid_value"),
        (make_body(functions=[{"name": "f"}]), "functions", "unsupported_parameter"),
        (make_body(max_tokens=0), "max_tokens", "invalid_value"),
        (make_body(max_tokens=1.5), "max_tokens", "invalid_type"),
        (make_body(max_completion_tokens=0), "max_completion_tokens", "invalid_value"),
        (make_body(seed="7"), "seed", "invalid_type"),
        (make_body(user=5), "user", "invalid_type"),
    ],
)
def test_invalid_requests_name_the_parameter(body: dict[str, Any], param: str, code: str) -> None:
    error = rejects(body)
    assert (error.param, error.code) == (param, code)
    assert error.message


def test_unknown_field_is_reported_before_other_problems() -> None:
    error = rejects({"bogus": 1})  # no model, no messages: the unknown field still wins
    assert (error.param, error.code) == ("bogus", "unsupported_parameter")


def test_tools_and_a_tool_round_trip_are_parsed() -> None:
    request = parse_chat_request(make_body(tools=[TOOL], tool_choice="required", parallel_tool_calls=False, messages=[
        {"role": "user", "content": "What is 1+2?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
    ]))
    assert [t.name for t in request.tools] == ["calculator"]
    assert (request.tool_choice.mode, request.parallel_tool_calls) == ("required", False)
    assert request.messages[1].as_template_dict() == {"role": "assistant", "content": "", "tool_calls": [CALL]}
    assert request.messages[2].as_template_dict() == {"role": "tool", "content": "3", "tool_call_id": "call_1"}


def test_tool_choice_defaults_to_auto_with_tools_and_names_a_server_tool() -> None:
    assert parse_chat_request(make_body(tools=[TOOL])).tool_choice.mode == "auto"
    assert parse_chat_request(make_body()).tool_choice.mode == "none"
    named = parse_chat_request(make_body(server_tools=["current_time"], tool_choice={
        "type": "function", "function": {"name": "current_time"}}))
    assert (named.tool_choice.mode, named.tool_choice.name, named.server_tools) == (
        "function", "current_time", ["current_time"])


def test_a_tool_without_parameters_takes_no_arguments() -> None:
    tool = parse_chat_request(make_body(tools=[{"type": "function", "function": {"name": "ping"}}])).tools[0]
    assert tool.parameters == {"type": "object", "properties": {}}
    assert tool.argument_error({}) is None


@pytest.mark.parametrize("name", ["logprobs", "tools", "tool_choice", "logit_bias", "reasoning_effort"])
def test_unsupported_fields_with_empty_values_are_accepted(name: str) -> None:
    empty = {"logprobs": False, "tools": [], "tool_choice": None, "logit_bias": {}, "reasoning_effort": None}[name]
    assert parse_chat_request(make_body(**{name: empty})).model == "sluice-demo"


def test_accepted_values_at_the_edges() -> None:
    request = parse_chat_request(make_body(
        temperature=0, top_p=1, n=8, stop="###", logprobs=True, top_logprobs=20, store=False, service_tier="auto",
        stream=True, stream_options={"include_usage": True},
        response_format={"type": "text"}, seed=-5, presence_penalty=-2, frequency_penalty=2, max_tokens=1,
    ))
    assert request.temperature == 0.0 and isinstance(request.temperature, float)
    assert request.top_p == 1.0
    assert request.stop == ["###"]
    assert request.stream and request.include_usage
    assert request.seed == -5
    assert (request.n, request.logprobs, request.top_logprobs) == (8, True, 20)
    assert parse_chat_request(make_body(metadata={"team": "a"})).metadata == {"team": "a"}

    assert (request.presence_penalty, request.frequency_penalty) == (-2.0, 2.0)
    assert request.max_tokens == 1

def test_response_formats_are_parsed_into_engine_guides() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = parse_chat_request(make_body(response_format={"type": "json_schema", "json_schema": {
        "name": "thing", "schema": schema, "strict": True}}))
    guide = request.response_format.guide()
    assert guide is not None and guide.type == "json_schema"
    sent = json.loads(guide.text)  # the schema, with the layout and every number's length bounded (allOf)
    assert sent["x-guidance"]["whitespace_flexible"] is False
    assert sent["properties"]["a"] == {"allOf": [{"type": "integer"}, {"minimum": -10**15, "maximum": 10**15}]}
    assert request.response_format.violation('{"a": 1}') is None
    assert request.response_format.violation('{"a": "1"}')
    assert request.response_format.violation('{"a": 1') .startswith("not JSON")
    json_object = parse_chat_request(make_body(response_format={"type": "json_object"})).response_format
    assert json_object.guide().type == "json" and json_object.violation("[1]") == "not a JSON object"


def test_four_stop_sequences_are_allowed() -> None:
    assert parse_chat_request(make_body(stop=["a", "b", "c", "d"])).stop == ["a", "b", "c", "d"]


def test_max_completion_tokens_takes_precedence_over_max_tokens() -> None:
    assert parse_chat_request(make_body(max_tokens=100, max_completion_tokens=7)).max_tokens == 7
    assert parse_chat_request(make_body(max_tokens=100)).max_tokens == 100
    assert parse_chat_request(make_body(max_completion_tokens=9)).max_tokens == 9


def test_text_parts_are_joined() -> None:
    body = make_body(messages=[{"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                                            {"type": "text", "text": "world"}]}])
    assert parse_chat_request(body).messages[0].content == "Hello, world"


def test_assistant_message_may_have_null_content() -> None:
    body = make_body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": None}])
    assert parse_chat_request(body).messages[1].content == ""


def test_developer_role_is_a_system_message_in_templates() -> None:
    body = make_body(messages=[{"role": "developer", "content": "be brief", "name": "ops"},
                               {"role": "user", "content": "hi"}])
    request = parse_chat_request(body)
    assert request.messages[0].role == "developer"  # kept as sent
    assert request.messages[0].as_template_dict() == {"role": "system", "content": "be brief", "name": "ops"}
    assert request.messages[1].as_template_dict() == {"role": "user", "content": "hi"}


def test_api_error_body_has_the_openai_shape() -> None:
    error = invalid("Bad thing.", "temperature", "invalid_value")
    body = error.body()
    assert body == {"error": {"message": "Bad thing.", "type": "invalid_request_error", "param": "temperature",
                              "code": "invalid_value"}}
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert json.loads(json.dumps(body)) == body


def test_api_error_body_keeps_null_param_and_code() -> None:
    body = ApiError(500, "boom", "server_error").body()
    assert body == {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
