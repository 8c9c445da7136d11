"""OpenAI `response_format` (text, json_object, json_schema) turned into the engine's guided-decoding input.

The engine (the `tensorrt_llm` slot) takes TensorRT-LLM's guide types: `json` (any JSON), `json_schema`, `regex` and
`ebnf_grammar` (llguidance's Lark-like syntax). A schema is checked here, before anything is admitted: against the
JSON Schema meta-schema (jsonschema) and by compiling it with llguidance, the library the engine uses, so a schema
the engine cannot enforce is the client's 400 and never a failure mid-request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from services.common.errors import invalid

RESPONSE_FORMATS = ("text", "json_object", "json_schema")
SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SCHEMA_CHARS = 100_000
# How the engine writes JSON under a schema: one space after ':' and ',' (as the demo model learned JSON), and no
# free whitespace, so a constrained answer cannot spend its token budget on blank space.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# How long a number the engine may write: at most 15 integer digits and 6 decimals. JSON Schema cannot bound a
# number's digits, and a small model can go on writing digits until max_tokens; these bounds are added to the guide
# (an allOf beside the schema's own constraints), so every constrained answer still validates against the schema.
NUMBER_LIMIT = 10**15
DECIMAL_STEP = 1e-6
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "x-guidance"})  # values, not schemas


@dataclass(frozen=True, slots=True)
class Guide:
    """A guided-decoding request for the engine: TensorRT-LLM's guide type and the guide text."""

    type: str  # "json" | "json_schema" | "regex" | "ebnf_grammar"
    text: str


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: str = "text"  # "text" | "json_object" | "json_schema"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool = False

    @property
    def constrained(self) -> bool:
        return self.type != "text"

    def guide(self) -> Guide | None:
        if self.type == "json_object":
            return Guide("json", "")
        if self.type == "json_schema" and self.schema is not None:
            return Guide("json_schema", json.dumps(guide_schema(self.schema), ensure_ascii=False))
        return None

    def violation(self, text: str) -> str | None:
        """Why `text` is not an answer of this format (None when it is): the check behind the eval and the tests."""
        if self.type == "text":
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"not JSON ({exc.msg} at character {exc.pos})"
        if self.type == "json_object" and not isinstance(value, dict):
            return "not a JSON object"
        if self.schema is not None:
            validator = validator_for(self.schema, default=Draft202012Validator)(self.schema)
            error = next(iter(validator.iter_errors(value)), None)
            if error is not None:
                return error.message
        return None


def guide_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as the engine enforces it: numbers bounded in length, and the JSON layout."""
    return with_layout(bounded_numbers(schema))


def bounded_numbers(schema: Any) -> Any:
    """`schema` with every number or integer subschema also bound to NUMBER_LIMIT (and DECIMAL_STEP for numbers)."""
    if isinstance(schema, list):
        return [bounded_numbers(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: value if key in _DATA_KEYWORDS else bounded_numbers(value) for key, value in schema.items()}
    kinds = node.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if not kinds & {"number", "integer"}:
        return node
    bound: dict[str, Any] = {"minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT}
    if "number" in kinds:
        bound["multipleOf"] = DECIMAL_STEP
    return {"allOf": [node, bound]}


def with_layout(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with llguidance's layout options (`x-guidance`), unless the client set its own."""
    if "x-guidance" in schema:
        return schema
    return {**schema, "x-guidance": JSON_LAYOUT}


def parse_response_format(raw: Any) -> ResponseFormat:
    if raw is None:
        return ResponseFormat()
    if not isinstance(raw, dict) or raw.get("type") not in RESPONSE_FORMATS:
        raise invalid("Invalid 'response_format': expected {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                      "{\"type\": \"json_schema\", \"json_schema\": {...}}.", "response_format", "invalid_value")
    kind = raw["type"]
    unknown = sorted(set(raw) - {"type", "json_schema"})
    if unknown or (kind != "json_schema" and "json_schema" in raw):
        name = unknown[0] if unknown else "json_schema"
        raise invalid(f"Invalid 'response_format': unexpected field '{name}' for type '{kind}'.",
                      f"response_format.{name}", "invalid_value")
    if kind != "json_schema":
        return ResponseFormat(kind)
    spec = raw.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid("Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema",
                      "missing_required_parameter")
    unknown = sorted(set(spec) - {"name", "description", "schema", "strict"})
    if unknown:
        raise invalid(f"Invalid 'response_format.json_schema': unrecognized field '{unknown[0]}'.",
                      f"response_format.json_schema.{unknown[0]}", "invalid_value")
    name = spec.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise invalid("Invalid 'response_format.json_schema.name': expected 1-64 characters of a-z, A-Z, 0-9, '_' "
                      "or '-'.", "response_format.json_schema.name", "invalid_value")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid("Invalid type for 'response_format.json_schema.strict': expected a boolean.",
                      "response_format.json_schema.strict", "invalid_type")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid("Invalid type for 'response_format.json_schema.schema': expected a JSON Schema object.",
                      "response_format.json_schema.schema", "invalid_type")
    check_schema(schema, "response_format.json_schema.schema")
    return ResponseFormat("json_schema", name, schema, bool(strict))


def check_schema(schema: dict[str, Any], param: str) -> None:
    """400 unless `schema` is a valid JSON Schema that the engine's grammar compiler can enforce."""
    text = json.dumps(schema, sort_keys=True, ensure_ascii=False)
    if len(text) > MAX_SCHEMA_CHARS:
        raise invalid(f"Invalid '{param}': the schema is longer than {MAX_SCHEMA_CHARS} characters.", param,
                      "invalid_json_schema")
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        raise invalid(f"Invalid schema in '{param}': {exc.message}", param, "invalid_json_schema") from None
    error = grammar_error("json_schema", json.dumps(guide_schema(schema), sort_keys=True, ensure_ascii=False))
    if error:
        raise invalid(f"Invalid schema in '{param}': the engine cannot enforce it ({error}).", param,
                      "invalid_json_schema")


@lru_cache(maxsize=1024)
def grammar_error(guide_type: str, text: str) -> str | None:
    """What llguidance says about a guide without a tokenizer (None: it compiles). Cached per guide: clients send
    the same schema again and again."""
    from llguidance import LLMatcher  # the engine's grammar library; imported when a guide is first checked

    try:
        if guide_type == "json_schema":
            grammar = LLMatcher.grammar_from_json_schema(text)
        elif guide_type == "regex":
            grammar = LLMatcher.grammar_from_regex(text)
        else:
            grammar = LLMatcher.grammar_from_lark(text)
    except ValueError as exc:
        return str(exc)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return "; ".join(messages)[:500] if is_error else None
