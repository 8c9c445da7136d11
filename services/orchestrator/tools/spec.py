"""OpenAI `tools`, `tool_choice`, `parallel_tool_calls` and the `server_tools` extension: parsed strictly, with each
function's `parameters` checked against the JSON Schema meta-schema so a bad schema is the client's 400, not a
model-time surprise."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from services.common.errors import invalid

MAX_TOOLS = 128
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
TOOL_CHOICE_MODES = ("none", "auto", "required")


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    _validator: Validator | None = field(default=None, repr=False, compare=False)

    @classmethod
    def checked(cls, name: str, description: str | None, parameters: dict[str, Any]) -> ToolSpec:
        """Raises jsonschema's SchemaError if `parameters` is not a valid JSON Schema."""
        validator_cls = validator_for(parameters, default=Draft202012Validator)
        validator_cls.check_schema(parameters)
        return cls(name, description, parameters, validator_cls(parameters))

    @property
    def validator(self) -> Validator:
        if self._validator is None:
            self._validator = validator_for(self.parameters, default=Draft202012Validator)(self.parameters)
        return self._validator

    def argument_error(self, arguments: Any) -> str | None:
        """The first schema violation of `arguments`, as a readable sentence, or None when they are valid."""
        error = next(iter(sorted(self.validator.iter_errors(arguments), key=lambda e: list(e.path))), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{error.message} (at '{where}')" if where else error.message

    def as_template_tool(self) -> dict[str, Any]:
        """The OpenAI tool object the chat template renders into the system turn."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: str  # "none" | "auto" | "required" | "function"
    name: str | None = None  # the forced function when mode == "function"


def parse_tools(raw: Any) -> list[ToolSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'tools': expected an array of tool objects.", "tools", "invalid_type")
    if len(raw) > MAX_TOOLS:
        raise invalid(f"Invalid 'tools': at most {MAX_TOOLS} tools are allowed.", "tools", "invalid_value")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(raw):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise invalid(f"Invalid '{where}': expected {{\"type\": \"function\", \"function\": {{...}}}}.", "tools",
                          "invalid_value")
        function = tool["function"]
        unknown = sorted(set(function) - {"name", "description", "parameters", "strict"})
        if unknown:
            raise invalid(f"'{where}.function.{unknown[0]}' is not supported by this deployment.", "tools",
                          "unsupported_parameter")
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise invalid(f"Invalid '{where}.function.name': expected 1-64 characters of a-z, A-Z, 0-9, '_' or '-'.",
                          "tools", "invalid_value")
        if any(spec.name == name for spec in specs):
            raise invalid(f"Invalid 'tools': the function name '{name}' is used twice.", "tools", "invalid_value")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"Invalid type for '{where}.function.description': expected a string.", "tools",
                          "invalid_type")
        if not isinstance(function.get("strict", False), bool | None):
            raise invalid(f"Invalid type for '{where}.function.strict': expected a boolean.", "tools", "invalid_type")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = dict(EMPTY_PARAMETERS)
        if not isinstance(parameters, dict):
            raise invalid(f"Invalid type for '{where}.function.parameters': expected a JSON Schema object.", "tools",
                          "invalid_type")
        try:
            specs.append(ToolSpec.checked(name, description, parameters))
        except SchemaError as exc:
            raise invalid(f"Invalid schema for function '{name}' in '{where}.function.parameters': {exc.message}",
                          "tools", "invalid_function_parameters") from None
    return specs


def parse_tool_choice(raw: Any, tool_names: set[str]) -> ToolChoice:
    """`tool_names` are every function the model may call (client tools and requested server tools)."""
    if raw is None:
        return ToolChoice("auto" if tool_names else "none")
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise invalid(f"Invalid value for 'tool_choice': {raw!r}. Supported values are: 'none', 'auto', "
                          "'required' or a named function object.", "tool_choice", "invalid_value")
        if raw != "none" and not tool_names:
            raise invalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                          "specified.", "tool_choice", "invalid_value")
        return ToolChoice(raw)
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(function, dict) \
            or not isinstance(function.get("name"), str):
        raise invalid("Invalid 'tool_choice': expected 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice", "invalid_type")
    if function["name"] not in tool_names:
        raise invalid(f"Invalid 'tool_choice': function '{function['name']}' is not one of the provided tools.",
                      "tool_choice", "invalid_value")
    return ToolChoice("function", function["name"])


def parse_parallel_tool_calls(raw: Any) -> bool:
    if raw is None:
        return True
    if not isinstance(raw, bool):
        raise invalid("Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls",
                      "invalid_type")
    return raw


def parse_server_tools(raw: Any) -> list[str]:
    """The Sluice extension `server_tools`: names of tools the orchestrator runs itself (checked by the runner)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise invalid("Invalid type for 'server_tools': expected an array of tool names.", "server_tools",
                      "invalid_type")
    if len(set(raw)) != len(raw):
        raise invalid("Invalid 'server_tools': a tool is named twice.", "server_tools", "invalid_value")
    return list(raw)


def parse_assistant_tool_calls(raw: Any, param: str) -> list[dict[str, Any]]:
    """Assistant `tool_calls` in a request's history, normalised to OpenAI's shape (arguments as JSON text)."""
    if not isinstance(raw, list):
        raise invalid(f"Invalid type for '{param}': expected an array.", param, "invalid_type")
    calls = []
    for index, call in enumerate(raw):
        where = f"{param}.[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or call.get("type", "function") != "function" or not isinstance(function, dict):
            raise invalid(f"Invalid '{where}': expected {{\"id\", \"type\": \"function\", \"function\"}}.", where,
                          "invalid_value")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"Missing required parameter: '{where}.id'.", f"{where}.id", "missing_required_parameter")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"Missing required parameter: '{where}.function.name'.", f"{where}.function.name",
                          "missing_required_parameter")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise invalid(f"Invalid type for '{where}.function.arguments': expected a JSON string.",
                          f"{where}.function.arguments", "invalid_type")
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise invalid(f"Invalid '{where}.function.arguments': expected a JSON object encoded as a string.",
                          f"{where}.function.arguments", "invalid_value")
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls
