"""The tool runner's policies with a scripted generator: forced calls, the invalid-call policy, parallel_tool_calls,
and the bounded server-tool loop with summed usage."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.common.errors import ApiError
from services.orchestrator.chat_request import ChatRequest, parse_chat_request
from services.orchestrator.generate import Finished, GenerationPlan, PreparedGeneration, TextDelta, Usage
from services.orchestrator.structured_output import Guide
from services.orchestrator.tools.registry import builtin_registry
from services.orchestrator.tools.runner import ServerToolRan, ToolCallsReady, ToolCallsRejected, ToolRunner
from services.orchestrator.triton_llm import LLMParams

CALC = {"type": "function", "function": {"name": "calculator", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "12 + 30"}}</tool_call>'


class ScriptedGenerator:
    """Stands in for Generator: each run() plays the next scripted list of text deltas (one token each)."""

    def __init__(self, *outputs: list[str]) -> None:
        self.outputs = list(outputs)
        self.rounds: list[dict[str, Any]] = []
        self.closed_early = 0

    def prepare(self, chat: ChatRequest, *, tools: list[dict] | None = None, prefill: str = "",
                tenant: str | None = None, request_id: str | None = None,
                guide: Guide | None = None) -> PreparedGeneration:
        self.rounds.append({"messages": [m.as_template_dict() for m in chat.messages], "tools": tools,
                            "prefill": prefill, "tenant": tenant, "guide": guide})
        return PreparedGeneration(GenerationPlan(None, [0] * 10 * len(self.rounds),  # type: ignore[arg-type]
                                                 LLMParams(max_tokens=64, end_id=2), [], prefill,
                                                 tool_markup=bool(tools), guide=guide))

    async def run(self, prepared: PreparedGeneration, request_id: str):
        chunks = self.outputs.pop(0)
        finished = False
        try:
            for chunk in chunks:
                yield TextDelta(chunk, 1)
            finished = True
            yield Finished("stop", Usage(len(prepared.prompt_ids), len(chunks), cached_prompt_tokens=1))
        finally:
            self.closed_early += not finished


def run(generator: ScriptedGenerator, **body: Any) -> list:
    chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "What is 12 + 30?"}], **body})
    runner = ToolRunner(generator, builtin_registry())  # type: ignore[arg-type]

    async def collect() -> list:
        return [event async for event in runner.run(chat, runner.prepare(chat), "req")]

    return asyncio.run(collect())


def content(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_client_tool_call_ends_with_tool_calls() -> None:
    events = run(ScriptedGenerator(["<tool_call>", CALL[11:30], CALL[30:]]), tools=[CALC])
    (ready,) = [e for e in events if isinstance(e, ToolCallsReady)]
    assert ready.calls[0].name == "calculator" and json.loads(ready.calls[0].arguments) == {"expression": "12 + 30"}
    assert events[-1].reason == "tool_calls" and content(events) == ""


def test_required_and_named_choices_constrain_the_round_with_a_tool_call_grammar() -> None:
    generator = ScriptedGenerator([CALL])
    events = run(generator, tools=[CALC], tool_choice="required")
    guide = generator.rounds[0]["guide"]
    assert guide.type == "ebnf_grammar" and guide.text.startswith("start: call+\n") and "TEXT" not in guide.text
    assert generator.rounds[0]["prefill"] == ""
    assert events[-1].reason == "tool_calls"
    generator = ScriptedGenerator([CALL])
    events = run(generator, tools=[CALC], tool_choice={"type": "function", "function": {"name": "calculator"}})
    assert generator.rounds[0]["guide"].text.startswith("start: call\n")
    (ready,) = [e for e in events if isinstance(e, ToolCallsReady)]
    assert ready.calls[0].arguments == '{"expression": "12 + 30"}'
    generator = ScriptedGenerator(["Hi."])
    run(generator, tools=[CALC])
    assert generator.rounds[0]["guide"].text.startswith("start: TEXT | TEXT? call+\n")  # auto


def test_tool_choice_none_renders_no_tools_and_leaves_text_alone() -> None:
    generator = ScriptedGenerator(["42."])
    events = run(generator, tools=[CALC], tool_choice="none")
    assert generator.rounds[0]["tools"] is None
    assert content(events) == "42." and events[-1].reason == "stop"


def test_an_invalid_call_is_rejected_with_an_explanation_and_no_calls() -> None:
    bad = '<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>'
    events = run(ScriptedGenerator([CALL, bad]), tools=[CALC])
    assert not any(isinstance(e, ToolCallsReady) for e in events)  # all or nothing: the valid call is withheld too
    (rejected,) = [e for e in events if isinstance(e, ToolCallsRejected)]
    assert "'expression' is a required property" in rejected.errors[0].error
    assert content(events) == ""  # no server text in the answer: the rejection is in invalid_tool_calls only
    assert events[-1].reason == "stop"


def test_a_call_cut_off_by_max_tokens_finishes_with_length() -> None:
    class Truncating(ScriptedGenerator):
        async def run(self, prepared: PreparedGeneration, request_id: str):
            yield TextDelta('<tool_call>{"name": "calc', 2)
            yield Finished("length", Usage(10, 2))

    events = run(Truncating(), tools=[CALC])
    assert isinstance(events[-2], ToolCallsRejected) and "cut off" in events[-2].errors[0].error
    assert events[-1].reason == "length"


def test_parallel_tool_calls_false_stops_the_model_after_the_first_call() -> None:
    generator = ScriptedGenerator([CALL, "\n", CALL, "never"])
    events = run(generator, tools=[CALC], parallel_tool_calls=False)
    (ready,) = [e for e in events if isinstance(e, ToolCallsReady)]
    assert len(ready.calls) == 1 and generator.closed_early == 1
    assert events[-1].reason == "tool_calls" and events[-1].usage.completion_tokens == 1


def test_server_tools_run_and_the_model_answers_with_usage_summed() -> None:
    generator = ScriptedGenerator([CALL], ["12 + 30 = ", "42."])
    events = run(generator, server_tools=["calculator"])
    (ran,) = [e for e in events if isinstance(e, ServerToolRan)]
    assert ran.result.output == "42"
    assert content(events) == "12 + 30 = 42."
    final = events[-1]
    assert final.reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.cached_prompt_tokens) == (30, 3, 2)
    second = generator.rounds[1]["messages"]
    assert second[1]["tool_calls"][0]["id"] == ran.call.id
    assert second[2] == {"role": "tool", "content": "42", "tool_call_id": ran.call.id}
    assert generator.rounds[1]["guide"].text.startswith("start: TEXT | TEXT? call+")  # later rounds: auto


def test_later_server_tool_rounds_keep_the_first_rounds_priority_tenant_and_cacheability() -> None:
    class Recording(ScriptedGenerator):
        def __init__(self, *outputs: list[str]) -> None:
            super().__init__(*outputs)
            self.plans: list[PreparedGeneration] = []

        async def run(self, prepared: PreparedGeneration, request_id: str):
            self.plans.append(prepared)
            async for event in super().run(prepared, request_id):
                yield event

    generator = Recording([CALL], [CALL], ["done"])
    chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "What is 12 + 30?"}],
                               "server_tools": ["calculator"]})
    runner = ToolRunner(generator, builtin_registry())  # type: ignore[arg-type]
    first = runner.prepare(chat, tenant="acme")
    first.admitted(tenant="acme", priority=297, cacheable=False)  # as admission and the input guard left it

    async def collect() -> list:
        return [event async for event in runner.run(chat, first, "req")]

    assert content(asyncio.run(collect())) == "done"
    assert len(generator.plans) == 3 and generator.plans[0] is first
    assert [(p.priority, p.tenant, p.cacheable) for p in generator.plans] == [(297, "acme", False)] * 3
    assert [r["tenant"] for r in generator.rounds] == ["acme"] * 3


def test_server_tool_errors_are_fed_back_to_the_model() -> None:
    generator = ScriptedGenerator(['<tool_call>{"name": "calculator", "arguments": {"expression": "1/0"}}'
                                   "</tool_call>"], ["Cannot divide by zero."])
    run(generator, server_tools=["calculator"])
    assert generator.rounds[1]["messages"][-1]["content"] == "error: division by zero"


def test_server_tool_rounds_are_bounded_then_the_tools_leave_the_prompt() -> None:
    generator = ScriptedGenerator([CALL], [CALL], [CALL], ["done"])
    events = run(generator, server_tools=["calculator"])
    assert sum(isinstance(e, ServerToolRan) for e in events) == 3
    assert [r["tools"] is not None for r in generator.rounds] == [True, True, True, False]
    assert content(events) == "done"


def test_a_round_that_calls_a_client_tool_returns_it_to_the_client() -> None:
    time_call = '<tool_call>{"name": "clock", "arguments": {}}</tool_call>'
    events = run(ScriptedGenerator([time_call]), server_tools=["calculator"],
                 tools=[{"type": "function", "function": {"name": "clock"}}])
    (ready,) = [e for e in events if isinstance(e, ToolCallsReady)]
    assert [c.name for c in ready.calls] == ["clock"]


@pytest.mark.parametrize(("body", "message"), [
    ({"server_tools": ["shell"]}, "unknown server tool 'shell'"),
    ({"server_tools": ["calculator"], "tools": [CALC]}, "also defined in 'tools'"),
])
def test_bad_server_tools_are_400s(body: dict, message: str) -> None:
    with pytest.raises(ApiError, match=message) as info:
        run(ScriptedGenerator(), **body)
    assert (info.value.status, info.value.param) == (400, "server_tools")
