"""The grammar that constrains a tool-calling answer to the caller's tools (llguidance's Lark-like syntax, sent to the
engine as TensorRT-LLM's `ebnf_grammar` guide).

The chat template renders a call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, where the markers
are special tokens. A call is a JSON object whose `name` is one of the allowed tools and whose `arguments` follow
that tool's `parameters` schema (an anyOf over the tools, one branch per name), between the two special tokens:
- `required`: one call (or several when parallel calls are allowed), nothing else;
- a named tool: one call of that tool;
- `auto`: free text that cannot contain the opener, or text followed by calls. Text alone ends the answer normally;
  once the model opens a call, the rest must be a valid call.
The markers are special tokens, so ordinary text can only spell `<tool_call>` out of plain pieces: the text terminal
excludes that spelling too, or the tool-call parser would read it as a call.
"""

from __future__ import annotations

import json
from typing import Any

from services.orchestrator.structured_output import JSON_LAYOUT, Guide, bounded_numbers
from services.orchestrator.tools.spec import ToolChoice, ToolSpec

CALL_OPEN_TOKEN = "<tool_call>"
CALL_CLOSE_TOKEN = "</tool_call>"
# Any text (at least one character) that does not contain the opener spelt out.
_FREE_TEXT = r"/(?s:.+)/ & ~/(?s:.*<tool_call>.*)/"


def call_schema(specs: list[ToolSpec]) -> dict[str, Any]:
    """One JSON Schema for a call of any of `specs`: {"name": <that tool>, "arguments": <its parameters>}."""
    branches = [{"type": "object",
                 "properties": {"name": {"const": spec.name}, "arguments": bounded_numbers(spec.parameters)},
                 "required": ["name", "arguments"], "additionalProperties": False} for spec in specs]
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {**schema, "x-guidance": JSON_LAYOUT}


def tool_call_grammar(specs: list[ToolSpec], choice: ToolChoice, parallel: bool) -> Guide | None:
    """The guide for a round with these tools (None when the model is not to call any)."""
    if choice.mode == "none" or not specs:
        return None
    if choice.mode == "function":
        specs = [spec for spec in specs if spec.name == choice.name]
    calls = "call+" if parallel and choice.mode != "function" else "call"
    start = f"TEXT | TEXT? {calls}" if choice.mode == "auto" else calls
    lines = [f"start: {start}",
             f"call: {CALL_OPEN_TOKEN} body {CALL_CLOSE_TOKEN}",
             f"body: %json {json.dumps(call_schema(specs), ensure_ascii=False)}"]
    if choice.mode == "auto":
        lines.append(f"TEXT: {_FREE_TEXT}")
    return Guide("ebnf_grammar", "\n".join(lines) + "\n")
