"""The built-in server-side tools. Their schemas and descriptions match what the demo model was trained on
(pipelines/demo_model/corpus.py), so the model calls them the way it learned to."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.orchestrator.tools.spec import ToolSpec


class ToolInputError(ValueError):
    """The tool cannot run on these arguments; the message is safe to show the model and the user."""


MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e100

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate(expression: str) -> int | float:
    """Arithmetic on numbers with + - * / // % ** and parentheses. Parses with `ast` and walks only number
    literals and those operators: names, calls, attributes and everything else are rejected, and exponents and
    magnitudes are bounded so no input can make the process spin."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolInputError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ToolInputError(f"cannot parse {expression!r} as arithmetic") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or (abs(left) > 1 and abs(right) * math.log10(
                abs(left)) > 100)):
            raise ToolInputError("the exponent is too large")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolInputError("division by zero") from None
        except (OverflowError, ValueError) as exc:
            raise ToolInputError(f"arithmetic error: {exc}") from None
    raise ToolInputError(f"unsupported element in the expression: {type(node).__name__}")


def _bounded(value: Any) -> int | float:
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise ToolInputError("the result is not a finite real number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolInputError("the number is too large")
    return value


def format_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return str(round(value, 4)) if abs(value) < 1e15 else repr(value)
    return str(value)


def calculator(arguments: dict[str, Any]) -> str:
    return format_number(evaluate(arguments["expression"]))


def current_time(arguments: dict[str, Any], now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str:
    """The time as HH:MM, as the demo model learned to read it."""
    name = arguments["timezone"]
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolInputError(f"unknown IANA timezone {name!r}") from None
    return now().astimezone(zone).strftime("%H:%M")


CALCULATOR = ToolSpec.checked("calculator", "Evaluate an arithmetic expression.", {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]})
CURRENT_TIME = ToolSpec.checked("current_time", "Get the current time in a timezone.", {
    "type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]})
