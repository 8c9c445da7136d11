"""Function calling through Envoy with the openai SDK: client tools round trip, streamed tool-call deltas, forced
calls, server-side tools, the invalid-arguments policy and the 400s."""

from __future__ import annotations

import json

import openai
import pytest

from services.common.settings import Settings

CALC = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
TIME = {"type": "function", "function": {
    "name": "current_time", "description": "Get the current time in a timezone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}
ASK = [{"role": "user", "content": "What is 17 * 23?"}]


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)


def create(client: openai.OpenAI, stack: Settings, messages: list, **kwargs):
    return client.chat.completions.create(model=stack.model_name, messages=messages, temperature=0, max_tokens=64,
                                          **kwargs)


def test_auto_tool_call_round_trip(client: openai.OpenAI, stack: Settings) -> None:
    reply = create(client, stack, ASK, tools=[CALC, TIME], tool_choice="auto")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "calculator"
    expression = json.loads(call.function.arguments)["expression"]
    assert expression.replace(" ", "") == "17*23"
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "391"}]
    final = create(client, stack, history, tools=[CALC, TIME])
    assert final.choices[0].finish_reason == "stop"
    assert "391" in final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_streamed_tool_call_deltas_reassemble_to_the_same_call(client: openai.OpenAI, stack: Settings) -> None:
    whole = create(client, stack, ASK, tools=[CALC, TIME]).choices[0].message.tool_calls[0]
    chunks = list(create(client, stack, ASK, tools=[CALC, TIME], stream=True,
                         stream_options={"include_usage": True}))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    first, rest = deltas[0], deltas[1:]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0, "function", "calculator", "")
    assert first.id.startswith("call_")
    assert rest and all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    assert "".join(d.function.arguments for d in rest) == whole.function.arguments
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage.completion_tokens > 0


def test_named_tool_choice_forces_that_call(client: openai.OpenAI, stack: Settings) -> None:
    reply = create(client, stack, [{"role": "user", "content": "What time is it in Tokyo?"}], tools=[CALC, TIME],
                   tool_choice={"type": "function", "function": {"name": "current_time"}})
    (call,) = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "current_time"
    assert json.loads(call.function.arguments) == {"timezone": "Asia/Tokyo"}


def test_required_tool_choice_forces_a_call_the_model_would_not_make(client: openai.OpenAI,
                                                                      stack: Settings) -> None:
    hello = [{"role": "user", "content": "Hello!"}]
    assert not create(client, stack, hello, tools=[CALC, TIME]).choices[0].message.tool_calls
    reply = create(client, stack, hello, tools=[CALC, TIME], tool_choice="required")
    choice = reply.choices[0]  # the engine decodes under the tools' grammar: the call is always a valid one
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    for call in choice.message.tool_calls:
        schema = {"calculator": CALC, "current_time": TIME}[call.function.name]["function"]["parameters"]
        assert set(json.loads(call.function.arguments)) == set(schema["required"])


def test_tool_choice_none_renders_no_tools(client: openai.OpenAI, stack: Settings) -> None:
    reply = create(client, stack, ASK, tools=[CALC, TIME], tool_choice="none")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.choices[0].message.tool_calls is None


def test_server_side_calculator_answers_in_one_request(client: openai.OpenAI, stack: Settings) -> None:
    reply = create(client, stack, [{"role": "user", "content": "What is 12 + 30?"}],
                   extra_body={"server_tools": ["calculator"]})
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "42" in choice.message.content
    (ran,) = reply.model_extra["server_tool_calls"]
    assert ran["function"]["name"] == "calculator" and ran["output"] == "42"
    # usage sums both rounds: the second prompt holds the first prompt, the call and the result
    assert reply.usage.prompt_tokens > 2 * 40
    streamed = create(client, stack, [{"role": "user", "content": "What is 12 + 30?"}], stream=True,
                      extra_body={"server_tools": ["calculator"]})
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_the_clients_schema_wins_over_what_the_model_learned(client: openai.OpenAI, stack: Settings) -> None:
    # The model learned {"expression": "17 * 23"}; this client's schema wants a number, and the engine enforces it.
    strict = {"type": "function", "function": {**CALC["function"], "parameters": {
        "type": "object", "properties": {"expression": {"type": "number"}}, "required": ["expression"]}}}
    reply = create(client, stack, ASK, tools=[strict], tool_choice={"type": "function",
                                                                     "function": {"name": "calculator"}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert isinstance(json.loads(call.function.arguments)["expression"], int | float)
    assert "invalid_tool_calls" not in (choice.message.model_extra or {})


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]}, "tools"),
    ({"tools": [CALC], "tool_choice": {"type": "function", "function": {"name": "weather"}}}, "tool_choice"),
    ({"extra_body": {"server_tools": ["shell"]}}, "server_tools"),
])
def test_bad_tool_requests_are_400s(client: openai.OpenAI, stack: Settings, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        create(client, stack, ASK, **extra)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param



RAG_TENANT = "tenant-tools"


@pytest.fixture(scope="module")
def manuals(stack: Settings) -> str:
    """One small document in the `manuals` collection of RAG_TENANT."""
    import grpc
    from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

    with grpc.insecure_channel(stack.retrieval_url) as channel:
        summary = retrieval_pb2_grpc.RetrievalStub(channel).Ingest(iter([
            retrieval_pb2.Document(id="kettle.md", collection="manuals",
                                   text="Descale the Aurora kettle every six weeks with citric acid.")]),
            metadata=(("x-sluice-tenant", RAG_TENANT),), timeout=60)
    assert summary.documents == 1
    return "manuals"


def test_server_side_retrieve_is_offered_and_forced_through_envoy(client: openai.OpenAI, stack: Settings,
                                                                 manuals: str, tenant_keys) -> None:
    rag_client = client.with_options(api_key=tenant_keys(RAG_TENANT, "enterprise"))  # acts as the manuals' owner
    reply = create(rag_client, stack, [{"role": "user", "content": "How often should I descale the Aurora kettle?"}],
                   extra_body={"server_tools": ["retrieve"]},
                   tool_choice={"type": "function", "function": {"name": "retrieve"}})
    choice = reply.choices[0]
    ran = reply.model_extra.get("server_tool_calls") or []
    if ran:  # the forced call is constrained to `retrieve`'s schema: it ran against this tenant's collection
        assert ran[0]["function"]["name"] == "retrieve"
        if json.loads(ran[0]["function"]["arguments"])["collection"] == manuals:
            assert ran[0]["error"] is None and "[kettle.md#" in ran[0]["output"]
    else:  # the demo model never learned `retrieve`: it may write its query string until max_tokens, honestly
        assert choice.finish_reason == "length"
        (rejected,) = choice.message.model_extra["invalid_tool_calls"]
        assert "cut off" in rejected["error"] and rejected["raw"].startswith('{"name": "retrieve"')


def test_server_side_retrieve_runs_against_the_retrieval_service(stack: Settings, manuals: str) -> None:
    """The runner with a scripted model call and the server's registry: the real Search RPC, as the tenant."""
    import asyncio

    from services.orchestrator.chat_request import parse_chat_request
    from services.orchestrator.tools.registry import builtin_registry
    from services.orchestrator.tools.retrieve_tool import request_tenant
    from services.orchestrator.tools.runner import ServerToolRan, ToolRunner
    from tests.unit.test_tool_runner import ScriptedGenerator

    call = json.dumps({"name": "retrieve", "arguments": {"query": "descale the kettle", "collection": manuals}})

    def ask(tenant: str) -> ServerToolRan:
        generator = ScriptedGenerator(["<tool_call>" + call + "</tool_call>"], ["Every six weeks."])
        runner = ToolRunner(generator, builtin_registry(stack.retrieval_url))  # type: ignore[arg-type]
        chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "Descale?"}],
                                   "server_tools": ["retrieve"],
                                   "tool_choice": {"type": "function", "function": {"name": "retrieve"}}})

        async def collect() -> list:
            request_tenant.set(tenant)
            return [event async for event in runner.run(chat, runner.prepare(chat), "req")]

        events = asyncio.run(collect())
        ran_events = [e for e in events if isinstance(e, ServerToolRan)]
        assert len(ran_events) == 1, events
        (ran,) = ran_events
        assert generator.rounds[1]["messages"][-1]["role"] == "tool"
        return ran

    ran = ask(RAG_TENANT)
    assert ran.call.name == "retrieve" and ran.result.ok
    assert ran.result.output.startswith("[kettle.md#") and "six weeks" in ran.result.output
    other = ask("someone-else").result  # another tenant does not have the collection: an error fed to the model
    assert not other.ok and "does not exist for your tenant" in other.error
