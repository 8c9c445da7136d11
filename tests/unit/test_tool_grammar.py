"""The tool-call grammar, checked with llguidance against the demo model's tokenizer: which token sequences the
engine would let through for `required`, a named tool and `auto`."""

from __future__ import annotations

import pytest
from llguidance import LLMatcher, LLTokenizer

from engine.tokenizer import ChatTokenizer
from services.common.settings import REPO_ROOT
from services.orchestrator.structured_output import bounded_numbers, grammar_error
from services.orchestrator.tools.grammar import tool_call_grammar
from services.orchestrator.tools.spec import ToolChoice, ToolSpec

LOOKUP = ToolSpec.checked("lookup_order", None, {
    "type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"],
    "additionalProperties": False})
CANCEL = ToolSpec.checked("cancel_order", None, {
    "type": "object", "properties": {"order_id": {"type": "integer"}, "reason": {"enum": ["late", "broken"]}},
    "required": ["order_id", "reason"], "additionalProperties": False})
CALL = '<tool_call>{"name": "lookup_order", "arguments": {"order_id": 7}}</tool_call>'
CANCEL_CALL = '<tool_call>{"name": "cancel_order", "arguments": {"order_id": 7, "reason": "late"}}</tool_call>'


@pytest.fixture(scope="module")
def tokenizer() -> ChatTokenizer:
    return ChatTokenizer.from_pretrained(REPO_ROOT / "models" / "sluice-demo")


def accepts(tokenizer: ChatTokenizer, mode: ToolChoice, text: str, parallel: bool = True) -> bool:
    guide = tool_call_grammar([LOOKUP, CANCEL], mode, parallel)
    assert guide is not None and guide.type == "ebnf_grammar"
    assert grammar_error(guide.type, guide.text) is None
    matcher = LLMatcher(LLTokenizer(tokenizer.tokenizer.to_str(), eos_token=tokenizer.eos_token_id),
                        LLMatcher.grammar_from_lark(guide.text))
    ids = tokenizer.encode(text)
    return matcher.validate_tokens(ids) == len(ids) and matcher.consume_tokens(ids) and matcher.is_accepting()


def test_required_admits_only_calls_of_the_given_tools_with_valid_arguments(tokenizer: ChatTokenizer) -> None:
    required = ToolChoice("required")
    assert accepts(tokenizer, required, CALL)
    assert accepts(tokenizer, required, CALL + CANCEL_CALL)
    assert not accepts(tokenizer, required, CALL + CANCEL_CALL, parallel=False)
    assert not accepts(tokenizer, required, "Sure. " + CALL)  # no text
    assert not accepts(tokenizer, required, CALL.replace("lookup_order", "calculator"))  # a tool not sent
    assert not accepts(tokenizer, required, CALL.replace("7", '"7"'))  # arguments against the schema
    assert not accepts(tokenizer, required, CANCEL_CALL.replace("late", "lost"))  # enum


def test_a_named_tool_admits_that_tool_only(tokenizer: ChatTokenizer) -> None:
    named = ToolChoice("function", "cancel_order")
    assert accepts(tokenizer, named, CANCEL_CALL)
    assert not accepts(tokenizer, named, CALL)


def test_auto_admits_text_or_text_then_calls_but_not_the_opener_spelt_in_text(tokenizer: ChatTokenizer) -> None:
    auto = ToolChoice("auto")
    assert accepts(tokenizer, auto, "I can answer that without a tool.")
    assert accepts(tokenizer, auto, "Let me look. " + CALL)
    assert not accepts(tokenizer, auto, CALL.replace("lookup_order", "current_time"))
    plain_opener = "<" + "tool" + "_call>"  # the marker spelt with ordinary tokens
    spelt = [i for piece in ("<", "tool", "_call", ">") for i in tokenizer.encode(piece)]
    assert tokenizer.decode(spelt) == plain_opener
    guide = tool_call_grammar([LOOKUP], auto, True)
    matcher = LLMatcher(LLTokenizer(tokenizer.tokenizer.to_str(), eos_token=tokenizer.eos_token_id),
                        LLMatcher.grammar_from_lark(guide.text))
    assert matcher.validate_tokens(tokenizer.encode("ok ") + spelt) < len(tokenizer.encode("ok ") + spelt)


def test_no_grammar_when_no_call_is_possible() -> None:
    assert tool_call_grammar([LOOKUP], ToolChoice("none"), True) is None
    assert tool_call_grammar([], ToolChoice("auto"), True) is None


def test_numbers_are_bounded_in_the_guide_but_keep_their_own_constraints() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "number", "minimum": 0}, "k": {"type": ["integer", "null"]},
        "e": {"enum": [{"type": "number"}]}}}
    bounded = bounded_numbers(schema)
    assert bounded["properties"]["n"] == {"allOf": [{"type": "number", "minimum": 0}, {
        "minimum": -10**15, "maximum": 10**15, "multipleOf": 1e-6}]}
    assert bounded["properties"]["k"]["allOf"][1] == {"minimum": -10**15, "maximum": 10**15}
    assert bounded["properties"]["e"] == schema["properties"]["e"]  # enum values are data, not schemas
