"""The incremental `<tool_call>` parser: any chunking gives the same content and calls; bad calls are never calls."""

from __future__ import annotations

import json
import random

import pytest

from services.orchestrator.tools.parser import CALL_OPEN, InvalidToolCall, ToolCall, ToolCallParser
from services.orchestrator.tools.spec import ToolSpec

CALC = ToolSpec.checked("calculator", "Evaluate an arithmetic expression.", {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]})
TIME = ToolSpec.checked("current_time", None, {
    "type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"],
    "additionalProperties": False})

ONE = '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>'
TWO = ONE + '\n<tool_call>{"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}}</tool_call>'


def parse(chunks: list[str]) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    parser = ToolCallParser([CALC, TIME])
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.finish()
    text = "".join(e for e in events if isinstance(e, str))
    return (text, [e for e in events if isinstance(e, ToolCall)], [e for e in events if isinstance(e, InvalidToolCall)])


def chunkings(text: str, seed: int = 0, count: int = 40) -> list[list[str]]:
    rng = random.Random(seed)
    out = [[text], list(text)]
    for _ in range(count):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, min(12, len(text) - 1))))
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


@pytest.mark.parametrize("chunks", chunkings("Let me compute that. " + ONE))
def test_any_chunking_gives_the_same_content_and_call(chunks: list[str]) -> None:
    text, calls, errors = parse(chunks)
    assert text == "Let me compute that. "
    assert errors == []
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("calculator", {"expression": "17 * 23"})]
    assert "".join(calls[0].fragments) == calls[0].arguments


def test_arguments_stream_in_the_fragments_the_model_wrote_them() -> None:
    _, calls, _ = parse(['<tool_call>{"name": "calculator", "arguments": {"expr', 'ession": "1', ' + 2"}}',
                         "</tool_call>"])
    assert calls[0].arguments == '{"expression": "1 + 2"}'
    assert calls[0].fragments == ['{"expr', 'ession": "1', ' + 2"}']


def test_multiple_calls_in_one_answer_each_get_an_id() -> None:
    for chunks in chunkings(TWO, seed=1, count=10):
        text, calls, errors = parse(chunks)
        assert text == "\n" and errors == []
        assert [c.name for c in calls] == ["calculator", "current_time"]
        assert json.loads(calls[1].arguments) == {"timezone": "Asia/Tokyo"}
        assert len({c.id for c in calls}) == 2
        assert all(c.id.startswith("call_") for c in calls)


def test_plain_text_passes_through_and_a_lone_angle_bracket_is_released_at_the_end() -> None:
    text, calls, errors = parse(["a < b and <tool", "s are fun <"])
    assert (text, calls, errors) == ("a < b and <tools are fun <", [], [])


def test_text_that_might_start_a_marker_is_held_back_until_it_cannot() -> None:
    parser = ToolCallParser([CALC])
    assert parser.feed("x <tool_") == ["x "]
    assert parser.feed("cat") == ["<tool_cat"]


@pytest.mark.parametrize(("body", "reason"), [
    ('{"name": "calculator", "arguments": {"expression": "1+1"}', "not valid JSON"),
    ('["calculator"]', "not an object"),
    ('{"name": "weather", "arguments": {"city": "Oslo"}}', "no tool named 'weather'"),
    ('{"name": "calculator", "arguments": {"expr": "1+1"}}', "'expression' is a required property"),
    ('{"name": "calculator", "arguments": {"expression": 5}}', "5 is not of type 'string'"),
    ('{"name": "current_time", "arguments": {"timezone": "UTC", "x": 1}}', "Additional properties"),
    ('{"name": "calculator", "arguments": "not json"}', "not valid JSON"),
    ('{"name": "calculator", "arguments": [1]}', "not a JSON object"),
])
def test_invalid_calls_are_reported_never_returned_as_calls(body: str, reason: str) -> None:
    for chunks in chunkings(f"{CALL_OPEN}{body}</tool_call>", seed=2, count=5):
        text, calls, errors = parse(chunks)
        assert calls == [] and text == ""
        assert len(errors) == 1 and reason in errors[0].error


def test_double_encoded_arguments_are_accepted_and_normalised() -> None:
    _, calls, errors = parse(['<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2*3\\"}"}'
                              "</tool_call>"])
    assert errors == []
    assert calls[0].arguments == '{"expression": "2*3"}' and calls[0].fragments == [calls[0].arguments]


def test_keys_in_another_order_still_parse() -> None:
    _, calls, _ = parse(['<tool_call>{"arguments": {"expression": "2*3"}, "name": "calculator"}</tool_call>'])
    assert calls[0].name == "calculator" and json.loads(calls[0].arguments) == {"expression": "2*3"}


def test_a_call_cut_off_by_the_end_of_output_is_invalid() -> None:
    text, calls, errors = parse(["ok ", '<tool_call>{"name": "calculator", "argu'])
    assert text == "ok " and calls == []
    assert "cut off" in errors[0].error


def test_a_runaway_call_is_bounded() -> None:
    parser = ToolCallParser([CALC])
    events = parser.feed(CALL_OPEN + "x" * 20_000)
    assert len(events) == 1 and isinstance(events[0], InvalidToolCall) and "longer than" in events[0].error
    assert not parser.in_call


def test_the_detokenizer_shows_tool_markers_but_no_other_special_tokens(demo_tokenizer) -> None:
    ids = demo_tokenizer.encode("Sure. " + ONE + "<|end|><|user|>")
    plain, marked = demo_tokenizer.detokenizer(), demo_tokenizer.detokenizer(keep_special=("<tool_call>",
                                                                                          "</tool_call>"))
    assert "".join(plain.push([i]) for i in ids) + plain.flush() == "Sure. " + ONE[11:-12]
    text = "".join(marked.push([i]) for i in ids) + marked.flush()
    assert text == "Sure. " + ONE
    assert parse([text])[1][0].name == "calculator"
