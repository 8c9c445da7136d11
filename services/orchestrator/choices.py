"""`n` > 1: sibling generations of one prompt, merged into one stream of (choice index, event).

Siblings share the prompt's KV blocks through the engine's prefix cache (same tenant salt, same prompt ids), which
only works once the first choice's prefill has written them: so choice 0 starts alone, and the others start when
its first event arrives. They then prefill only the prompt's last, partial block (the engine never serves a
request's last prompt token from cache) and decode alongside choice 0 in the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.orchestrator.generate import Finished, PreparedGeneration, TextDelta, Usage
from services.orchestrator.logprobs import TokenLogprobs
from services.orchestrator.tools.parser import InvalidToolCall, ToolCall
from services.orchestrator.tools.runner import ServerToolRan, ToolCallsReady, ToolCallsRejected

_DONE = object()


def sibling(prepared: PreparedGeneration, index: int) -> PreparedGeneration:
    """Choice `index` of a request: the same admitted plan and route; a seeded request gets seed + index, so the
    choices differ as OpenAI's do and each is still reproducible. Each sibling holds its own place in the
    deployment's in-flight count (taken when it starts), so admission control sees n sequences, not one."""
    params = prepared.plan.params
    if params.seed is not None and index:
        params = dataclasses.replace(params, seed=params.seed + index)
    route = dataclasses.replace(prepared.route, reservation=None) if prepared.route is not None else None
    return PreparedGeneration(dataclasses.replace(prepared.plan, params=params), route=route)


async def merged(streams: list[Callable[[], AsyncIterator[Any]]]) -> AsyncIterator[tuple[int, Any]]:
    """Runs each choice's event stream (made by its factory) in its own task and yields (index, event) as they come.
    Choice 0 starts first; the rest start at its first event. An exception in any choice ends the merge with it;
    closing the merge closes every choice's stream (their generations stop in the engine)."""
    if len(streams) == 1:
        events = streams[0]()
        try:
            async for event in events:
                yield 0, event
        finally:
            await events.aclose()
        return
    inbox: asyncio.Queue = asyncio.Queue()
    tasks: list[asyncio.Task] = []

    async def pump(index: int) -> None:
        events = streams[index]()
        try:
            async for event in events:
                inbox.put_nowait((index, event))
            inbox.put_nowait((index, _DONE))
        except BaseException as exc:  # handed to the reader, which raises it
            inbox.put_nowait((index, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            await events.aclose()

    tasks.append(asyncio.create_task(pump(0)))
    running = 1
    try:
        while running:
            index, event = await inbox.get()
            if isinstance(event, BaseException):
                raise event
            if len(tasks) == 1:  # choice 0's prefill is done: its blocks are in the prefix cache
                tasks.extend(asyncio.create_task(pump(i)) for i in range(1, len(streams)))
                running += len(streams) - 1
            if event is _DONE:
                running -= 1
                continue
            yield index, event
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


@dataclasses.dataclass(slots=True)
class ChoiceResult:
    """Everything one choice produced, for the non-streamed answers (chat, completions, responses)."""

    parts: list[str] = dataclasses.field(default_factory=list)
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = dataclasses.field(default_factory=list)
    server_tool_calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    logprobs: list[TokenLogprobs] = dataclasses.field(default_factory=list)
    finished: Finished | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def take(self, event: Any) -> None:
        if isinstance(event, TextDelta):
            self.parts.append(event.text)
        elif isinstance(event, TokenLogprobs):
            self.logprobs.append(event)
        elif isinstance(event, ToolCallsReady):
            self.tool_calls.extend(event.calls)
        elif isinstance(event, ToolCallsRejected):
            self.invalid_tool_calls.extend(event.errors)
        elif isinstance(event, ServerToolRan):
            self.server_tool_calls.append(event.as_openai())
        elif isinstance(event, Finished):
            self.finished = event


def total_usage(results: list[Finished]) -> Usage:
    """A request's usage over its choices: the prompt once (the siblings share it), every choice's completion."""
    first = results[0].usage
    return Usage(first.prompt_tokens, sum(f.usage.completion_tokens for f in results), first.cached_prompt_tokens)
