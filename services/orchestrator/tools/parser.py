"""Incremental parser for the model's tool-call markup over streamed text deltas.

The demo model (and the chat template) write a call as
    <tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}</tool_call>
Text outside the markers is ordinary content and is released as soon as it cannot be the start of a marker; a call is
buffered until its closing marker, then parsed and checked: known tool, JSON object arguments, arguments valid
against the tool's JSON Schema. A call that fails any check becomes an `InvalidToolCall`, never a `ToolCall`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from services.orchestrator.tools.spec import ToolSpec

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
MAX_CALL_CHARS = 16_384  # a runaway call is cut off rather than buffered without bound
# `{"name": "...", "arguments": `: when a call starts like this, its arguments stream as the model wrote them
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*"arguments"\s*:\s*')
_DECODER = json.JSONDecoder()


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text
    id: str = field(default_factory=new_call_id)
    fragments: list[str] = field(default_factory=list)  # how `arguments` streams; concatenates to it

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class InvalidToolCall:
    raw: str  # the text between the markers (truncated for reports)
    error: str
    name: str | None = None

    def as_openai(self) -> dict[str, Any]:
        return {"name": self.name, "raw": self.raw[:2000], "error": self.error}


ParsedEvent = str | ToolCall | InvalidToolCall  # str: content text


class ToolCallParser:
    def __init__(self, tools: list[ToolSpec]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self._buffer = ""  # unreleased content, or the body of the open call
        self._in_call = False
        self._cuts: list[int] = []  # offsets in the call body where fed chunks ended (argument fragment boundaries)

    @property
    def in_call(self) -> bool:
        return self._in_call

    def feed(self, text: str) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        self._buffer += text
        while True:
            if not self._in_call:
                start = self._buffer.find(CALL_OPEN)
                if start < 0:
                    keep = _partial_suffix(self._buffer, CALL_OPEN)
                    content = self._buffer[: len(self._buffer) - keep]
                    self._buffer = self._buffer[len(content):]
                    if content:
                        events.append(content)
                    return events
                if start:
                    events.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(CALL_OPEN):]
                self._in_call, self._cuts = True, []
                continue
            end = self._buffer.find(CALL_CLOSE)
            if end < 0:
                if len(self._buffer) > MAX_CALL_CHARS:
                    events.append(InvalidToolCall(self._buffer, f"the tool call is longer than {MAX_CALL_CHARS} "
                                                                "characters"))
                    self._buffer, self._in_call = "", False
                    return events
                if self._buffer:
                    self._cuts.append(len(self._buffer))
                return events
            body, self._buffer = self._buffer[:end], self._buffer[end + len(CALL_CLOSE):]
            self._in_call = False
            events.append(self.parse_call(body, [c for c in self._cuts if c < end]))

    def finish(self) -> list[ParsedEvent]:
        """End of the model's output: held-back content is released; an unclosed call is invalid."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:
            self._in_call = False
            return [InvalidToolCall(rest, "the tool call was cut off before '</tool_call>'")]
        return [rest] if rest else []

    def parse_call(self, body: str, cuts: list[int] | None = None) -> ToolCall | InvalidToolCall:
        try:
            call = json.loads(body)
        except json.JSONDecodeError as exc:
            return InvalidToolCall(body, f"the tool call is not valid JSON ({exc.msg} at character {exc.pos})")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return InvalidToolCall(body, 'the tool call is not an object of the form {"name": ..., "arguments": ...}')
        name = call["name"]
        tool = self.tools.get(name)
        if tool is None:
            return InvalidToolCall(body, f"there is no tool named {name!r}", name)
        arguments = call.get("arguments", {})
        raw_arguments: str | None = None
        fragments: list[str] = []
        if isinstance(arguments, str):  # some models double-encode the arguments object
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return InvalidToolCall(body, "the arguments are not valid JSON", name)
        elif (head := _HEAD.match(body)) is not None:
            try:
                value, end = _DECODER.raw_decode(body, head.end())
            except json.JSONDecodeError:
                value, end = None, 0
            if isinstance(value, dict) and value == arguments:
                raw_arguments = body[head.end():end]
                fragments = _split(raw_arguments, [c - head.end() for c in cuts or ()])
        if not isinstance(arguments, dict):
            return InvalidToolCall(body, "the arguments are not a JSON object", name)
        error = tool.argument_error(arguments)
        if error is not None:
            return InvalidToolCall(body, f"the arguments do not match the tool's parameters schema: {error}", name)
        if raw_arguments is None:
            raw_arguments = json.dumps(arguments, ensure_ascii=False)
            fragments = [raw_arguments]
        return ToolCall(name, raw_arguments, fragments=fragments)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c for c in cuts if 0 < c < len(text)})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [text]
