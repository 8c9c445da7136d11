"""/v1/completions and /v1/responses request parsing, the response chain behind previous_response_id (on a SQLite
file), and the merge of n sibling choices."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.tokenizer import ChatTokenizer
from services.common.db import create_db_engine
from services.common.errors import ApiError
from services.common.settings import REPO_ROOT
from services.orchestrator.catalog import ModelCatalog, ModelEntry
from services.orchestrator.choices import merged
from services.orchestrator.completions_api import parse_completion_request
from services.orchestrator.conversations.store import ConversationStore
from services.orchestrator.migrations import migrate
from services.orchestrator.response_chain import ResponseChain, response_id
from services.orchestrator.responses_api import parse_responses_request

DEMO = REPO_ROOT / "models" / "sluice-demo"


@pytest.fixture(scope="module")
def catalog() -> ModelCatalog:
    return ModelCatalog([ModelEntry.from_checkpoint("sluice-demo", DEMO)])


def refused(call: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.status == 400
    return info.value


def test_completion_prompts_as_text_token_ids_or_a_list_of_one(catalog: ModelCatalog) -> None:
    tokenizer = ChatTokenizer.from_pretrained(DEMO)
    ids = tokenizer.encode("Once upon a time")
    for prompt in ("Once upon a time", ["Once upon a time"], ids, [ids]):
        chat, echo = parse_completion_request({"model": "sluice-demo", "prompt": prompt}, catalog)
        assert chat.raw_prompt and chat.messages[0].content == "Once upon a time" and not echo
        assert chat.prompt_ids == (tuple(ids) if prompt in (ids, [ids]) else None)
        assert chat.max_tokens == 16  # OpenAI's default for completions
    chat, echo = parse_completion_request({"model": "sluice-demo", "prompt": "x", "echo": True, "n": 2,
                                           "max_tokens": 5}, catalog)
    assert echo and chat.n == 2 and not chat.logprobs
    scored, _ = parse_completion_request({"model": "sluice-demo", "prompt": "x", "logprobs": 3}, catalog)
    assert scored.logprobs and scored.top_logprobs == 3


@pytest.mark.parametrize("body, param, code", [
    ({"prompt": "x", "suffix": "y"}, "suffix", "unsupported_parameter"),
    ({"prompt": "x", "best_of": 3}, "best_of", "unsupported_parameter"),
    ({"prompt": ["a", "b"]}, "prompt", "unsupported_parameter"),
    ({"prompt": [1, 10**6]}, "prompt", "invalid_value"),
    ({"prompt": 5}, "prompt", "invalid_type"),
    ({}, "prompt", "missing_required_parameter"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "logprobs", "unsupported_parameter"),
    ({"prompt": "x", "logit_bias": {"1": 2}}, "logit_bias", "unsupported_parameter"),
    ({"prompt": "x", "n": 9}, "n", "invalid_value"),
])
def test_completion_refusals_name_the_parameter(catalog: ModelCatalog, body: dict, param: str, code: str) -> None:
    error = refused(lambda: parse_completion_request({"model": "sluice-demo", **body}, catalog))
    assert (error.param, error.code) == (param, code)


def test_token_prompts_need_a_named_model(catalog: ModelCatalog) -> None:
    error = refused(lambda: parse_completion_request({"model": "auto", "prompt": [1, 2]}, catalog))
    assert error.param == "prompt"


def test_responses_input_instructions_tools_and_format_map_onto_chat() -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    parsed = parse_responses_request({
        "model": "sluice-demo", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "instructions": "Be brief.", "tools": [tool], "tool_choice": {"type": "function", "name": "lookup"},
        "max_output_tokens": 20, "store": False}, [])
    chat = parsed.chat
    assert [(m.role, m.content) for m in chat.messages] == [("system", "Be brief."), ("user", "hi")]
    assert [t.name for t in chat.tools] == ["lookup"] and chat.tool_choice.name == "lookup"
    assert chat.max_tokens == 20 and not parsed.store
    formatted = parse_responses_request({"model": "m", "input": "x", "text": {"format": {
        "type": "json_schema", "name": "t", "schema": {"type": "object"}}}}, [])
    assert formatted.chat.response_format.type == "json_schema"
    error = refused(lambda: parse_responses_request({"model": "m", "input": "x", "reasoning": {"effort": "low"}},
                                                    []))
    assert (error.param, error.code) == ("reasoning", "unsupported_parameter")
    error = refused(lambda: parse_responses_request({"model": "m", "input": "x", "tools": [{"type": "web_search"}]},
                                                    []))
    assert error.code == "unsupported_parameter"


def test_the_response_chain_copies_history_into_each_response(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    migrate(url)
    chain = ResponseChain(ConversationStore(create_db_engine(url)))
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    first = chain.reserve("t1", "m", None)
    chain.save("t1", first, [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "", "tool_calls": [call]}], (5, 2))
    history = chain.history("t1", response_id(first))
    assert history == [{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": None, "tool_calls": [call]}]
    second = chain.reserve("t1", "m", None)
    chain.save("t1", second, [*history, {"role": "tool", "tool_call_id": "call_1", "content": "found"},
                              {"role": "assistant", "content": "Found it.", "finish": "stop"}], (9, 3))
    assert chain.history("t1", response_id(second))[2:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "found"}, {"role": "assistant", "content": "Found it."}]
    assert chain.history("t1", response_id(first)) == history  # a branch point stays as it was
    with pytest.raises(ApiError) as info:
        chain.history("t2", response_id(first))  # another tenant's response does not exist for it
    assert info.value.status == 404
    abandoned = chain.reserve("t1", "m", None)
    chain.forget("t1", abandoned)
    with pytest.raises(ApiError):
        chain.history("t1", response_id(abandoned))


def test_siblings_start_after_the_first_choice_and_merge_by_index() -> None:
    started: list[int] = []

    def stream(index: int):
        async def events():
            started.append(index)
            for step in range(3):
                await asyncio.sleep(0)
                yield f"{index}:{step}"
        return events

    async def collect() -> list[tuple[int, str]]:
        return [item async for item in merged([stream(i) for i in range(3)])]

    items = asyncio.run(collect())
    assert started[0] == 0 and sorted(started) == [0, 1, 2]
    assert items[0] == (0, "0:0")
    for index in range(3):
        assert [event for i, event in items if i == index] == [f"{index}:{s}" for s in range(3)]


def test_responses_refusals_use_the_responses_field_names() -> None:
    error = refused(lambda: parse_responses_request({"model": "m", "input": "x", "max_output_tokens": 0}, []))
    assert error.param == "max_output_tokens" and "'max_output_tokens'" in error.message
    error = refused(lambda: parse_responses_request({"model": "m", "input": "x", "text": {"format": {
        "type": "json_schema", "name": "a", "schema": {"type": "objekt"}}}}, []))
    assert (error.param, error.code) == ("text.format.schema", "invalid_json_schema")
