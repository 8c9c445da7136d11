"""`sluice eval tools`: constrained tool calls with tools the model never saw, through the running stack's OpenAI API.

Each case offers one to three generated tools (made-up names, varied parameter schemas: strings, integers, numbers,
booleans, enums, arrays, nested objects, required and optional fields) with `tool_choice: required` and counts a call
as valid when its name is one of the offered tools and its arguments parse and validate against that tool's schema.
The cases are generated from a seed, so a run is repeatable; half the requests sample (temperature 0.8).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema

VERBS = ["fetch", "book", "rate", "archive", "ship", "quote", "audit", "merge", "tag", "scan", "route", "pause"]
NOUNS = ["invoice", "parcel", "meeting", "sensor", "ticket", "recipe", "voucher", "playlist", "reactor", "greenhouse"]
FIELDS = ["id", "label", "count", "priority", "region", "notes", "size", "owner", "urgent", "colour", "window"]
# Room for the largest arguments the generated schemas allow (nested arrays of 40-character strings): a call cut off
# by max_tokens is counted as invalid, so the budget must not be what is measured.
MAX_TOKENS = 512
ASKS = ["Please {verb} the {noun} for me.", "Can you {verb} my {noun}? It is number 42.",
        "I need the {noun} {verb}ed before Friday.", "{verb} {noun} 7, the blue one, quickly."]


def _property(rng: random.Random, depth: int) -> dict[str, Any]:
    kind = rng.choice(["string", "integer", "number", "boolean", "enum", "array", "object"] if depth < 2
                      else ["string", "integer", "boolean", "enum"])
    if kind == "enum":
        return {"type": "string", "enum": rng.sample(["low", "mid", "high", "red", "green", "north", "south"], 3)}
    if kind == "integer":
        return {"type": "integer", "minimum": 0, "maximum": rng.choice([9, 100, 5000])}
    if kind == "string":
        return {"type": "string", "maxLength": rng.choice([8, 16, 40])}
    if kind == "array":
        return {"type": "array", "items": _property(rng, depth + 1), "minItems": 1, "maxItems": 3}
    if kind == "object":
        return _object(rng, depth + 1)
    return {"type": kind}


def _object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    names = rng.sample(FIELDS, rng.randint(1, 3))
    return {"type": "object", "properties": {name: _property(rng, depth) for name in names},
            "required": rng.sample(names, rng.randint(1, len(names))), "additionalProperties": False}


def make_cases(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` requests (messages + tools) with generated tools."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        tools = []
        for _ in range(rng.randint(1, 3)):
            name = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}_{rng.randint(10, 99)}"
            if all(t["function"]["name"] != name for t in tools):
                tools.append({"type": "function", "function": {
                    "name": name, "description": f"{name.replace('_', ' ')} (made up for this evaluation)",
                    "parameters": _object(rng)}})
        verb, noun = tools[0]["function"]["name"].split("_")[:2]
        question = rng.choice(ASKS).format(verb=verb, noun=noun)
        cases.append({"messages": [{"role": "user", "content": question}], "tools": tools,
                      "temperature": 0.8 if index % 2 else 0.0, "seed": index})
    return cases


@dataclass(slots=True)
class EvalResult:
    cases: int = 0
    valid: int = 0
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.valid / self.cases if self.cases else 0.0


def call_errors(message: Any, tools: list[dict[str, Any]]) -> list[str]:
    """Why an answer is not a valid call of the offered tools (empty: it is)."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    calls = message.tool_calls or []
    if not calls:
        return ["no tool call"]
    errors = []
    for call in calls:
        if call.function.name not in schemas:
            errors.append(f"called {call.function.name!r}, which was not offered")
            continue
        try:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
        except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
            errors.append(f"{call.function.name}: {str(exc).splitlines()[0]}")
    return errors


def evaluate(client: Any, model: str, cases: list[dict[str, Any]], max_tokens: int | None = None) -> EvalResult:
    """Runs the cases one by one through `client` (an openai.OpenAI). Without `max_tokens` the server's default
    budget applies (what fits the context window, at most the orchestrator's default)."""
    result = EvalResult()
    started = time.monotonic()
    for index, case in enumerate(cases):
        budget = {"max_tokens": max_tokens} if max_tokens else {}
        reply = client.chat.completions.create(model=model, tool_choice="required", **budget, **case)
        choice = reply.choices[0]
        errors = call_errors(choice.message, case["tools"])
        if choice.finish_reason == "length":
            errors.append("cut off by max_tokens")
        result.cases += 1
        result.calls += len(choice.message.tool_calls or [])
        if errors:
            result.failures.append(f"case {index}: {'; '.join(errors)}")
        else:
            result.valid += 1
    result.seconds = time.monotonic() - started
    return result


def run_cli(count: int = 100, seed: int = 0, model: str | None = None, in_process: str | None = None) -> int:
    """Through the running stack, or with `in_process` (a checkpoint folder) on the CPU engine in this process."""
    import openai

    from services.common.settings import Settings
    from services.orchestrator.tenancy.dev_key import local_api_key

    cases = make_cases(count, seed)
    if in_process:
        result = evaluate_in_process(cases, in_process)
        where = f"in process, {in_process}"
    else:
        settings = Settings.from_env()
        client = openai.OpenAI(base_url=settings.public_base_url, api_key=local_api_key(settings) or "none",
                               max_retries=0, timeout=120)
        where = f"through {settings.public_base_url}"
        try:
            result = evaluate(client, model or settings.model_name, cases)
        except openai.APIError as exc:
            print(f"sluice eval tools: {exc}", file=sys.stderr)
            return 1
    print(f"tool calls with unseen tools (tool_choice=required, seed {seed}, {where}): {result.valid}/{result.cases} "
          f"valid ({result.rate:.0%}), {result.calls} calls, {result.seconds:.1f} s")
    for failure in result.failures:
        print("  " + failure)
    return 0 if result.valid == result.cases else 1


def evaluate_in_process(cases: list[dict[str, Any]], model_dir: str = "models/sluice-demo",
                        max_tokens: int = MAX_TOKENS) -> EvalResult:
    """The same cases on the CPU engine in this process, without the stack: the request path's own pieces (the chat
    template with the tools, the tool-call grammar, the engine's guided decoding, the tool-call parser), all
    requests submitted at once (continuous batching)."""
    from engine.engine import Engine, EngineConfig
    from engine.guided import Guide, GuidedDecoding
    from engine.model import load_checkpoint
    from engine.request import FinishReason, GenerationRequest, StepOutput
    from engine.sampling import SamplingParams
    from engine.tokenizer import ChatTokenizer
    from services.orchestrator.tools.grammar import tool_call_grammar
    from services.orchestrator.tools.parser import ToolCall, ToolCallParser
    from services.orchestrator.tools.spec import ToolChoice, parse_tools

    @dataclass
    class Sink:
        tokens: list[int] = field(default_factory=list)
        reason: FinishReason | None = None
        error: Exception | None = None

        def is_cancelled(self) -> bool:
            return False

        def emit(self, output: StepOutput) -> None:
            self.tokens.extend(output.new_token_ids)
            self.reason = output.finish_reason if output.finished else self.reason

        def fail(self, error: Exception) -> None:
            self.error = error

    tokenizer = ChatTokenizer.from_pretrained(model_dir)
    model = load_checkpoint(model_dir)[0]
    engine = Engine(model, EngineConfig(block_size=16, num_blocks=4096),
                    GuidedDecoding.from_checkpoint(model_dir, model.args.vocab_size))
    started = time.monotonic()
    runs = []
    for index, case in enumerate(cases):
        specs = parse_tools(case["tools"])
        guide = tool_call_grammar(specs, ToolChoice("required"), True)
        prompt = tokenizer.encode(tokenizer.render(case["messages"], tools=case["tools"]))
        params = SamplingParams(max_tokens=max_tokens, temperature=case["temperature"], seed=case["seed"],
                                end_id=tokenizer.eos_token_id)
        sink = Sink()
        engine.submit(GenerationRequest(f"case-{index}", prompt, params, guide=Guide(guide.type, guide.text)), sink)
        runs.append((specs, sink))
    engine.run_until_done()
    result = EvalResult()
    for index, (specs, sink) in enumerate(runs):
        detok = tokenizer.detokenizer(keep_special=("<tool_call>", "</tool_call>"))
        parser = ToolCallParser(specs)
        events = parser.feed(detok.push(sink.tokens) + detok.flush()) + parser.finish()
        calls = [e for e in events if isinstance(e, ToolCall)]
        errors = [str(e) for e in events if not isinstance(e, ToolCall | str)]
        errors += ["no tool call"] if not calls else []
        errors += [f"text outside the calls: {e!r}" for e in events if isinstance(e, str) and e.strip()]
        errors += [f"engine: {sink.error}"] if sink.error else []
        errors += ["cut off by max_tokens"] if sink.reason is FinishReason.LENGTH else []
        result.cases += 1
        result.calls += len(calls)
        if errors:
            result.failures.append(f"case {index}: {'; '.join(errors)}")
        else:
            result.valid += 1
    result.seconds = time.monotonic() - started
    return result
