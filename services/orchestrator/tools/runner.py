"""Tool-enabled generation: renders the tools into the prompt, forces a call when `tool_choice` asks for one, parses
the model's `<tool_call>` markup into OpenAI tool calls, and runs server-side tools in a bounded loop.

Event stream (what the facade renders): `TextDelta` content, then at most one of `ToolCallsReady` (valid calls for
the client) or `ToolCallsRejected` (invalid calls, already explained in content), `ServerToolRan` for each server-side
call executed, and a final `Finished` whose usage sums every generation round.

Policies (documented in README "Tools"):
- Calls are constrained: the engine decodes under a grammar (tools/grammar.py) that admits only calls of the
  request's tools (and the server tools it enabled) with arguments valid against each tool's schema; with
  `required` or a named tool the answer is a call, with `auto` it is text or text followed by calls.
- Invalid calls are still never passed on (a call cut off by max_tokens, or a deployment that ignores the grammar):
  no tool calls are returned, the choice ends with finish_reason "length" (cut off) or "stop", the content is what
  the model wrote before the call (no server text is added), and the message carries the rejected calls in the
  extension field `invalid_tool_calls`. No automatic retry.
- `server_tools` (extension): the named registry tools are added to the prompt; when the model calls only server
  tools, they run, their results are appended as `tool` turns, and the model generates again, at most `max_rounds`
  times; after that the server tools leave the prompt so the model must answer. A round that also calls a client tool
  ends the request with the client calls (`finish_reason: "tool_calls"`); its server calls are not run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.common.errors import invalid
from services.orchestrator.chat_request import ChatMessage, ChatRequest
from services.orchestrator.generate import Finished, Generator, PreparedGeneration, PromptCount, TextDelta, Usage
from services.orchestrator.logprobs import TokenLogprobs
from services.orchestrator.structured_output import Guide, grammar_error
from services.orchestrator.tools.grammar import tool_call_grammar
from services.orchestrator.tools.parser import InvalidToolCall, ParsedEvent, ToolCall, ToolCallParser
from services.orchestrator.tools.registry import ToolRegistry, ToolResult, builtin_registry
from services.orchestrator.tools.spec import ToolChoice, ToolSpec

DEFAULT_MAX_ROUNDS = 3


@dataclass(slots=True)
class ToolCallsReady:
    calls: list[ToolCall]


@dataclass(slots=True)
class ToolCallsRejected:
    errors: list[InvalidToolCall]


@dataclass(slots=True)
class ServerToolRan:
    call: ToolCall
    result: ToolResult

    def as_openai(self) -> dict:
        return {**self.call.as_openai(), "output": self.result.output, "error": self.result.error}


ToolRunEvent = TextDelta | TokenLogprobs | ToolCallsReady | ToolCallsRejected | ServerToolRan | Finished


class ToolRunner:
    def __init__(self, generator: Generator, registry: ToolRegistry | None = None,
                 max_rounds: int = DEFAULT_MAX_ROUNDS) -> None:
        self.generator = generator
        self.registry = registry or builtin_registry()
        self.max_rounds = max_rounds

    def _check_server_tools(self, chat: ChatRequest) -> None:
        client_names = {tool.name for tool in chat.tools}
        for name in chat.server_tools:
            if self.registry.get(name) is None:
                raise invalid(f"Invalid 'server_tools': unknown server tool {name!r}. Available: "
                              f"{', '.join(self.registry.names())}.", "server_tools", "invalid_value")
            if name in client_names:
                raise invalid(f"Invalid 'server_tools': {name!r} is also defined in 'tools'.", "server_tools",
                              "invalid_value")

    def count(self, chat: ChatRequest, *, tenant: str | None = None) -> PromptCount:
        """The first round's prompt tokens (tool definitions included), before anything is admitted."""
        self._check_server_tools(chat)
        tools, guide = self._round_tools(chat, 0)
        if guide is not None and guide.type == "ebnf_grammar" and (error := grammar_error(guide.type, guide.text)):
            raise invalid(f"Invalid 'tools': the engine cannot enforce these parameters schemas ({error}).", "tools",
                          "invalid_function_parameters")
        counted = self.generator.count(chat, tools=tools, tenant=tenant)
        return dataclasses.replace(counted, max_tokens=counted.max_tokens * chat.n)  # every choice may use it all

    def prepare(self, chat: ChatRequest, *, tenant: str | None = None,
                request_id: str | None = None) -> PreparedGeneration:
        """Validates `server_tools` and prepares the first round; raises ApiError (400) like Generator.prepare."""
        self._check_server_tools(chat)
        return self._prepare_round(chat, chat.messages, 0, tenant=tenant, request_id=request_id)

    def reprepare(self, prepared: PreparedGeneration, chat: ChatRequest) -> PreparedGeneration:
        return self.generator.reprepare(prepared, chat)

    def start_early(self, prepared: PreparedGeneration, request_id: str) -> bool:
        """A plain first round may start while the stages run; a round with tools waits for them."""
        return not prepared.tool_markup and self.generator.start_early(prepared, request_id)

    async def discard_head_start(self, prepared: PreparedGeneration) -> None:
        await self.generator.discard_head_start(prepared)

    def _specs(self, chat: ChatRequest, round_index: int) -> list[ToolSpec]:
        if chat.tool_choice.mode == "none":
            return []
        server = [self.registry.get(n).spec for n in chat.server_tools] if round_index < self.max_rounds else []
        return [*chat.tools, *server]

    def _round_tools(self, chat: ChatRequest, round_index: int) -> tuple[list[dict] | None, Guide | None]:
        """The tool definitions the template renders for a round, and what the engine constrains the answer to:
        the tool-call grammar (the request's `tool_choice` in the first round; later rounds, after server tools
        ran, may answer in text), else the response format."""
        specs = self._specs(chat, round_index)
        if not specs:
            return None, chat.response_format.guide()
        choice = chat.tool_choice if round_index == 0 else ToolChoice("auto")
        return [spec.as_template_tool() for spec in specs], tool_call_grammar(specs, choice, chat.parallel_tool_calls)

    def _prepare_round(self, chat: ChatRequest, messages: list[ChatMessage], round_index: int, *,
                       tenant: str | None = None, request_id: str | None = None) -> PreparedGeneration:
        tools, guide = self._round_tools(chat, round_index)
        return self.generator.prepare(dataclasses.replace(chat, messages=messages), tools=tools, guide=guide,
                                      tenant=tenant, request_id=request_id)

    async def run(self, chat: ChatRequest, prepared: PreparedGeneration,
                  request_id: str) -> AsyncIterator[ToolRunEvent]:
        if not prepared.tool_markup:  # no tools in play: plain generation
            plain = self.generator.run(prepared, request_id)
            try:
                async for event in plain:
                    yield event
            finally:
                await plain.aclose()  # closes the generation now, so its tokens are counted before usage is written
            return
        first = prepared
        try:
            total = Usage(prompt_tokens=0)
            messages = list(chat.messages)
            round_index = 0
            while True:
                parser = ToolCallParser(self._specs(chat, round_index))
                turn = _Turn()
                calls, errors, take = turn.calls, turn.errors, turn.take
                reason, usage = "stop", Usage(prompt_tokens=len(prepared.prompt_ids))
                delta = take(parser.feed(prepared.prefill))
                if delta.text:
                    yield delta
                events = self.generator.run(prepared, request_id)
                try:
                    async for event in events:
                        if isinstance(event, Finished):
                            reason, usage = event.reason, event.usage
                            continue
                        if isinstance(event, TokenLogprobs):
                            yield event
                            continue
                        usage.completion_tokens += event.token_count
                        yield take(parser.feed(event.text), event.token_count)
                        if (calls or errors) and not chat.parallel_tool_calls and not parser.in_call:
                            break  # one call is all the client allowed: stop the model now (frees its batch slot)
                finally:
                    await events.aclose()
                delta = take(parser.finish())
                if delta.text:
                    yield delta
                _add(total, usage)
                if errors:
                    yield ToolCallsRejected(errors)
                    yield Finished("length" if reason == "length" else "stop", total)
                    return
                if not calls:
                    yield Finished(reason, total)
                    return
                client_calls = [c for c in calls if c.name not in chat.server_tools]
                if client_calls:
                    yield ToolCallsReady(client_calls)
                    yield Finished("tool_calls", total)
                    return
                messages.append(ChatMessage(role="assistant", content=turn.text.strip(),
                                            tool_calls=[c.as_openai() for c in calls]))
                for call in calls:
                    result = await self.registry.get(call.name).run(json.loads(call.arguments))
                    yield ServerToolRan(call, result)
                    messages.append(ChatMessage(role="tool", content=result.as_message_content(), tool_call_id=call.id))
                round_index += 1
                prepared = _same_request(first, self._prepare_round(chat, messages, round_index, tenant=first.tenant,
                                                                    request_id=request_id))
        finally:
            prepared.release()  # a round prepared but closed before its generation started keeps no place


def _same_request(first: PreparedGeneration, later: PreparedGeneration) -> PreparedGeneration:
    """A later round is the same admitted request: it keeps the first round's scheduling priority, tenant and
    cacheability (cleared when a guard found PII, which the tool results do not undo)."""
    later.admitted(tenant=first.tenant, priority=first.priority, cacheable=first.cacheable)
    return later


@dataclass(slots=True)
class _Turn:
    """What one generation round produced, sorted out of the parser's events."""

    content: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[InvalidToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.content)

    def take(self, parsed: list[ParsedEvent], token_count: int = 0) -> TextDelta:
        text = "".join(p for p in parsed if isinstance(p, str))
        self.calls.extend(p for p in parsed if isinstance(p, ToolCall))
        self.errors.extend(p for p in parsed if isinstance(p, InvalidToolCall))
        self.content.append(text)
        return TextDelta(text, token_count)


def _add(total: Usage, usage: Usage) -> None:
    total.prompt_tokens += usage.prompt_tokens
    total.completion_tokens += usage.completion_tokens
    total.cached_prompt_tokens += usage.cached_prompt_tokens
