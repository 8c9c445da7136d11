"""The OpenAI API surface through Envoy with the openai SDK: structured outputs, constrained tool calls with tools the
demo model never saw, log-probs, n > 1, /v1/completions, /v1/responses, the served model in the body and the one
rule for unsupported parameters. Stream and non-stream for each."""

from __future__ import annotations

import json
import os
import time
import uuid

import jsonschema
import openai
import pytest

from engine.block_manager import DEFAULT_BLOCK_SIZE
from services.common.settings import Settings
from tests.conftest import engine_metric

ORDER_SCHEMA = {"type": "object", "properties": {
    "customer": {"type": "string", "maxLength": 24},
    "items": {"type": "array", "items": {"type": "object", "properties": {
        "sku": {"type": "string", "enum": ["A1", "B2", "C3"]}, "quantity": {"type": "integer", "minimum": 1,
                                                                           "maximum": 9}},
        "required": ["sku", "quantity"], "additionalProperties": False}, "minItems": 1, "maxItems": 3},
    "gift": {"type": "boolean"}}, "required": ["customer", "items", "gift"], "additionalProperties": False}
LOOKUP = {"type": "function", "function": {"name": "lookup_order", "description": "Find an order by its number.",
                                           "parameters": {"type": "object", "properties": {
                                               "order_id": {"type": "integer"}}, "required": ["order_id"],
                                               "additionalProperties": False}}}
CANCEL = {"type": "function", "function": {"name": "cancel_order", "description": "Cancel an order.",
                                           "parameters": {"type": "object", "properties": {
                                               "order_id": {"type": "integer"},
                                               "reason": {"type": "string", "enum": ["late", "broken", "other"]}},
                                               "required": ["order_id", "reason"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "Please cancel my order 1234, it arrived broken."}]


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=120)


def chat(client: openai.OpenAI, stack: Settings, messages: list, **kwargs):
    return client.chat.completions.create(model=stack.model_name, messages=messages, **kwargs)


def check_call(name: str, arguments: str) -> None:
    schema = {"lookup_order": LOOKUP, "cancel_order": CANCEL}[name]["function"]["parameters"]
    jsonschema.validate(json.loads(arguments), schema)


def test_json_schema_output_parses_and_validates_streamed_and_not(client: openai.OpenAI, stack: Settings) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER_SCHEMA, "strict": True}}
    ask = [{"role": "user", "content": "Write an order for Ada: two A1."}]
    reply = chat(client, stack, ask, response_format=fmt, temperature=0, max_tokens=200)
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), ORDER_SCHEMA)
    chunks = list(chat(client, stack, ask, response_format=fmt, temperature=0.9, seed=3, max_tokens=200,
                       stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), ORDER_SCHEMA)


def test_json_object_output_is_a_json_object(client: openai.OpenAI, stack: Settings) -> None:
    reply = chat(client, stack, [{"role": "user", "content": "Hello!"}], response_format={"type": "json_object"},
                 temperature=0, max_tokens=120)
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # cut off by max_tokens: honest, like OpenAI
        assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize("kwargs, param, code", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema", "invalid_json_schema"),
    ({"extra_body": {"reasoning_effort": "low"}}, "reasoning_effort", "unsupported_parameter"),
    ({"extra_body": {"prompt_cache_key": "k"}}, "prompt_cache_key", "unsupported_parameter"),
    ({"extra_body": {"service_tier": "flex"}}, "service_tier", "unsupported_parameter"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
])
def test_refusals_name_the_parameter(client: openai.OpenAI, stack: Settings, kwargs: dict, param: str,
                                     code: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, stack, ASK, max_tokens=4, **kwargs)
    assert (info.value.body["param"], info.value.body["code"]) == (param, code)


def test_required_tool_calls_are_valid_calls_of_the_callers_tools(client: openai.OpenAI, stack: Settings) -> None:
    reply = chat(client, stack, ASK, tools=[LOOKUP, CANCEL], tool_choice="required", temperature=0, max_tokens=96)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    for call in choice.message.tool_calls:
        check_call(call.function.name, call.function.arguments)


def test_a_named_tool_streams_arguments_that_concatenate_to_valid_json(client: openai.OpenAI,
                                                                      stack: Settings) -> None:
    chunks = list(chat(client, stack, ASK, tools=[LOOKUP, CANCEL], max_tokens=96, temperature=0.8, seed=5,
                       tool_choice={"type": "function", "function": {"name": "cancel_order"}}, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "cancel_order"
    check_call("cancel_order", "".join(d.function.arguments or "" for d in deltas))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_never_calls_a_tool_the_caller_did_not_send(client: openai.OpenAI, stack: Settings) -> None:
    # the demo model learned `calculator` and `current_time`; offered only order tools, it may answer in text
    for question in ("What is 17 * 23?", "What time is it in Tokyo?"):
        reply = chat(client, stack, [{"role": "user", "content": question}], tools=[LOOKUP, CANCEL],
                     temperature=0, max_tokens=96)
        for call in reply.choices[0].message.tool_calls or []:
            check_call(call.function.name, call.function.arguments)
        assert "invalid_tool_calls" not in (reply.choices[0].message.model_extra or {})


def test_logprobs_and_top_logprobs_streamed_and_not(client: openai.OpenAI, stack: Settings) -> None:
    reply = chat(client, stack, [{"role": "user", "content": "Hello!"}], logprobs=True, top_logprobs=3,
                 temperature=0, max_tokens=12)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)  # greedy: the best token
        assert bytes(entry.bytes).decode(errors="replace") == entry.token
    assert "".join(e.token for e in content).startswith(reply.choices[0].message.content[:5])
    chunks = list(chat(client, stack, [{"role": "user", "content": "Hello!"}], logprobs=True, temperature=0,
                       max_tokens=12, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_n_choices_have_their_index_and_usage_counts_every_choice(client: openai.OpenAI, stack: Settings) -> None:
    reply = chat(client, stack, [{"role": "user", "content": "Tell me something."}], n=3, temperature=1.0,
                 max_tokens=16, seed=11)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.model == stack.model_name
    assert reply.usage.completion_tokens == 16 * 3 or reply.usage.completion_tokens > 16  # each choice counted
    chunks = list(chat(client, stack, [{"role": "user", "content": "Tell me something."}], n=2, max_tokens=8,
                       temperature=1.0, seed=11, stream=True, stream_options={"include_usage": True}))
    finishes = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finishes == {0, 1}
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)]
    assert all(texts)
    assert chunks[-1].usage.completion_tokens >= 2


def test_sibling_choices_reuse_the_prompts_kv_blocks(client: openai.OpenAI, stack: Settings) -> None:
    prompt = [{"role": "user", "content": f"Story {uuid.uuid4().hex}: " + "the quick brown fox jumps. " * 12}]
    hits_before = engine_metric(stack, "sluice_engine_prefix_hit_tokens_total")
    reply = chat(client, stack, prompt, n=4, max_tokens=4, temperature=1.0)
    hits = engine_metric(stack, "sluice_engine_prefix_hit_tokens_total") - hits_before
    block = DEFAULT_BLOCK_SIZE
    reusable = (reply.usage.prompt_tokens - 1) // block * block  # whole blocks, never the last prompt token
    print(f"n=4, prompt {reply.usage.prompt_tokens} tokens: {hits:.0f} prompt tokens served from cache "
          f"({reusable} reusable per sibling)")
    assert hits >= 3 * reusable > 0  # choices 1..3 prefill only the prompt's last, partial block


def test_completions_string_tokens_echo_logprobs_and_stream(client: openai.OpenAI, stack: Settings,
                                                            demo_tokenizer) -> None:
    prompt = "Once upon a time"
    reply = client.completions.create(model=stack.model_name, prompt=prompt, max_tokens=8, temperature=0)
    assert reply.object == "text_completion" and reply.model == stack.model_name
    assert reply.usage.prompt_tokens == len(demo_tokenizer.encode(prompt))
    ids = demo_tokenizer.encode(prompt)
    by_ids = client.completions.create(model=stack.model_name, prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == reply.choices[0].text
    echoed = client.completions.create(model=stack.model_name, prompt=prompt, max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + reply.choices[0].text
    scored = client.completions.create(model=stack.model_name, prompt=prompt, max_tokens=8, temperature=0,
                                       logprobs=2)
    assert len(scored.choices[0].logprobs.tokens) == scored.usage.completion_tokens
    assert all(len(top) == 2 for top in scored.choices[0].logprobs.top_logprobs)
    streamed = list(client.completions.create(model=stack.model_name, prompt=prompt, max_tokens=8, temperature=0,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=stack.model_name, prompt=prompt, suffix="The end.", max_tokens=4)
    assert (info.value.body["param"], info.value.body["code"]) == ("suffix", "unsupported_parameter")


def test_responses_text_stream_tools_and_previous_response(client: openai.OpenAI, stack: Settings) -> None:
    first = client.responses.create(model=stack.model_name, input="My name is Ada.", instructions="Be brief.",
                                    max_output_tokens=24, temperature=0)
    assert first.object == "response" and first.model == stack.model_name
    assert first.output_text and first.usage.output_tokens > 0
    second = client.responses.create(model=stack.model_name, input="What is my name?", max_output_tokens=24,
                                     previous_response_id=first.id, temperature=0)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # the chain's history was in the prompt
    with client.responses.stream(model=stack.model_name, input="Hello!", max_output_tokens=16,
                                 temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] in ("response.completed", "response.incomplete")
    assert final.output_text
    called = client.responses.create(
        model=stack.model_name, input="Cancel order 77, it was late.", tool_choice="required", max_output_tokens=96,
        tools=[{"type": "function", **CANCEL["function"]}], temperature=0)
    (call,) = [item for item in called.output if item.type == "function_call"]
    check_call(call.name, call.arguments)
    answered = client.responses.create(
        model=stack.model_name, previous_response_id=called.id, max_output_tokens=24, temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "cancelled"}],
        tools=[{"type": "function", **CANCEL["function"]}])
    assert answered.status in ("completed", "incomplete")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=stack.model_name, input="x", previous_response_id="resp_" + "0" * 32)


def test_tool_calls_with_generated_tools_the_model_never_saw_are_all_valid(client: openai.OpenAI,
                                                                            stack: Settings) -> None:
    """`sluice eval tools` through Envoy (10 cases here; SLUICE_TOOL_EVAL_CASES=100 for the full figure)."""
    from services.bench.tool_call_eval import evaluate, make_cases

    result = evaluate(client, stack.model_name, make_cases(int(os.environ.get("SLUICE_TOOL_EVAL_CASES", "10"))))
    print(f"tool eval: {result.valid}/{result.cases} valid, {result.calls} calls, {result.seconds:.1f} s")
    assert result.valid == result.cases, result.failures


def test_metadata_is_kept_with_the_usage_record_and_store_false_is_accepted(stack: Settings, tenant_keys) -> None:
    from services.orchestrator.tenancy.usage import usage_rows_of

    client = openai.OpenAI(base_url=stack.public_base_url, api_key=tenant_keys("tenant-metadata", "enterprise"),
                           max_retries=0, timeout=60)
    reply = client.chat.completions.create(model=stack.model_name, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4, metadata={"team": "search", "run": "7"}, store=False,
                                           service_tier="auto")
    assert reply.service_tier == "default"
    deadline = time.monotonic() + 10  # usage rows are written off the request's path
    rows = []
    while not rows and time.monotonic() < deadline:
        rows = usage_rows_of(stack.db_url, "tenant-metadata")
        time.sleep(0.2)
    assert [json.loads(row.request_metadata) for row in rows] == [{"team": "search", "run": "7"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=stack.model_name, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=4, store=True)
    assert (info.value.body["param"], info.value.body["code"]) == ("store", "unsupported_parameter")
