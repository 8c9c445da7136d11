"""`sluice bench guided`: what guided decoding costs the CPU engine, in process, and whether its outputs hold.

(a) compile time of a guide, first and from the cache; (b) time per generated token with and without a grammar at
concurrency 1 and 16 (engine steps timed around `Engine.step`, prompts and lengths alike); (c) the share of ≥ 200
sampled outputs over varied JSON schemas that parse and validate (jsonschema), plus the share that hit max_tokens.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import torch

from engine.engine import Engine, EngineConfig
from engine.guided import Guide, GuidedDecoding
from engine.model import Llama, load_checkpoint
from engine.request import FinishReason, GenerationRequest, StepOutput
from engine.sampling import SamplingParams
from engine.tokenizer import ChatTokenizer
from services.bench.machine import machine_info

_NAME = {"type": "string", "minLength": 1, "maxLength": 16}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 999}
SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": _NAME, "age": _COUNT}, "required": ["name", "age"],
     "additionalProperties": False},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "reason": _NAME}, "required": ["ok", "reason"],
     "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": _NAME, "minItems": 1, "maxItems": 4}},
     "required": ["tags"], "additionalProperties": False},
    {"type": "object", "properties": {"status": {"enum": ["open", "closed", "pending"]}, "priority": _COUNT},
     "required": ["status", "priority"], "additionalProperties": False},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"id": _COUNT, "email": _NAME},
                                                "required": ["id", "email"], "additionalProperties": False},
                                      "active": {"type": "boolean"}},
     "required": ["user", "active"], "additionalProperties": False},
    {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"enum": ["a1", "b2", "c3"]}, "qty": _COUNT},
        "required": ["sku", "qty"], "additionalProperties": False}}}, "required": ["items"],
     "additionalProperties": False},
    {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}, "label": _NAME},
     "required": ["score", "label"], "additionalProperties": False},
    {"type": "object", "properties": {"city": _NAME, "temps": {"type": "array", "items": {
        "type": "integer", "minimum": -50, "maximum": 50}, "minItems": 1, "maxItems": 5}},
     "required": ["city", "temps"], "additionalProperties": False},
    {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "confidence": {"enum": [1, 2, 3]},
                                      "note": {"type": ["string", "null"], "maxLength": 12}},
     "required": ["answer", "confidence", "note"], "additionalProperties": False},
    {"type": "object", "properties": {"matrix": {"type": "array", "maxItems": 2, "items": {
        "type": "array", "maxItems": 3, "items": _COUNT}}, "meta": {"type": "object", "properties": {
            "rows": _COUNT}, "required": ["rows"], "additionalProperties": False}},
     "required": ["matrix", "meta"], "additionalProperties": False},
    {"type": "object", "properties": {"title": _NAME, "pages": _COUNT, "authors": {
        "type": "array", "items": _NAME, "maxItems": 2}, "draft": {"type": "boolean"}},
     "required": ["title", "pages", "authors", "draft"], "additionalProperties": False},
    {"type": "object", "properties": {"event": {"enum": ["login", "logout"]}, "at": {
        "type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"}}, "required": ["event", "at"],
     "additionalProperties": False},
]
# (b): a grammar that never ends within the measured length, so both sides generate the same number of tokens
LONG_REGEX = "[a-z ,.]{600}"
LONG_SCHEMA = {"type": "array", "minItems": 200, "items": SCHEMAS[4]}  # nested objects, 200 of them at least


@dataclass
class _Sink:
    tokens: list[int] = field(default_factory=list)
    finished: FinishReason | None = None
    error: Exception | None = None

    def is_cancelled(self) -> bool:
        return False

    def emit(self, output: StepOutput) -> None:
        self.tokens.extend(output.new_token_ids)
        if output.finished:
            self.finished = output.finish_reason

    def fail(self, error: Exception) -> None:
        self.error = error


def _compile_times(guided: GuidedDecoding) -> dict[str, float]:
    first, cached = [], []
    for i, schema in enumerate(SCHEMAS):
        guide = Guide("json_schema", json.dumps({**schema, "title": f"bench-{time.time_ns()}-{i}"}))  # uncached
        start = time.perf_counter()
        guided.matcher(guide)
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(20):
            guided.matcher(guide)
        cached.append((time.perf_counter() - start) / 20)
    return {"first_ms_median": 1e3 * statistics.median(first), "first_ms_max": 1e3 * max(first),
            "cached_ms_median": 1e3 * statistics.median(cached)}


class _GuidedClock:
    """Times the engine thread's own guided-decoding work (starting the mask fill; waiting for it and applying it):
    a direct measure that a busy machine's noise, which swamps end-to-end differences of a few percent, does not."""

    def __init__(self, engine: Engine) -> None:
        self.seconds = 0.0
        assert engine.guided is not None
        for owner, name in ((engine, "_masked"), (engine.guided, "start_fill")):
            setattr(owner, name, self._timed(getattr(owner, name)))

    def _timed(self, method):  # noqa: ANN001, ANN202 (a bound method, returned wrapped)
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


def _per_token(engine: Engine, tokenizer: ChatTokenizer, concurrency: int, guide: Guide | None,
               max_tokens: int, clock: _GuidedClock | None = None) -> dict[str, float]:
    """Decode time per generated token: steps timed after every prompt is prefilled."""
    sinks = []
    for i in range(concurrency):
        sink = _Sink()
        params = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=i)  # no end id: all run to max_tokens
        engine.submit(GenerationRequest(f"c{concurrency}-{i}-{time.time_ns()}", tokenizer.encode(f"Note {i}: "),
                                        params, guide=guide), sink)
        sinks.append(sink)
    while any(not s.tokens for s in sinks):  # prefill (and first token) outside the measurement
        engine.step()
    before = sum(len(s.tokens) for s in sinks)
    busy = 0.0
    guided_before = clock.seconds if clock is not None else 0.0
    while engine.has_work():
        start = time.perf_counter()
        engine.step()
        busy += time.perf_counter() - start
    tokens = sum(len(s.tokens) for s in sinks) - before
    assert all(s.error is None for s in sinks), [s.error for s in sinks if s.error]
    guided_work = (clock.seconds - guided_before) if clock is not None else 0.0
    return {"ms_per_token": 1e3 * busy / max(tokens, 1), "ms_per_step": 1e3 * busy / max(tokens / concurrency, 1),
            "guided_work_ms_per_token": 1e3 * guided_work / max(tokens, 1), "tokens": tokens}


def _validity(engine: Engine, tokenizer: ChatTokenizer, per_schema: int, batch: int) -> dict[str, Any]:
    jobs = [(i, j) for j in range(per_schema) for i in range(len(SCHEMAS))]
    valid = truncated = invalid = 0
    examples: list[str] = []
    for start in range(0, len(jobs), batch):
        running = []
        for i, j in jobs[start:start + batch]:
            sink = _Sink()
            params = SamplingParams(max_tokens=160, temperature=0.8, seed=1000 * i + j, end_id=tokenizer.eos_token_id)
            prompt = tokenizer.encode_chat([{"role": "user", "content": f"Reply in JSON (case {j})."}])
            engine.submit(GenerationRequest(f"v{i}-{j}", prompt, params,
                                            guide=Guide("json_schema", json.dumps(SCHEMAS[i]))), sink)
            running.append((i, sink))
        engine.run_until_done()
        for i, sink in running:
            text = tokenizer.decode(sink.tokens)
            if sink.finished is FinishReason.LENGTH:
                truncated += 1
                continue
            try:
                jsonschema.validate(json.loads(text), SCHEMAS[i])
                valid += 1
                if len(examples) < 3:
                    examples.append(text)
            except (json.JSONDecodeError, jsonschema.ValidationError):
                invalid += 1
    total = len(jobs)
    return {"outputs": total, "schemas": len(SCHEMAS), "valid": valid, "truncated_at_max_tokens": truncated,
            "invalid": invalid, "valid_rate": valid / total, "examples": examples}


def run(model_dir: Path, results: Path, per_schema: int = 20, max_tokens: int = 64, rounds: int = 7) -> dict[str, Any]:
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    tokenizer = ChatTokenizer.from_pretrained(model_dir)
    model: Llama = load_checkpoint(model_dir)[0]
    guided = GuidedDecoding.from_checkpoint(model_dir, model.args.vocab_size, threads=1)
    engine = Engine(model, EngineConfig(block_size=16, num_blocks=2048, max_num_seqs=64), guided)
    report: dict[str, Any] = {"model": str(model_dir), "machine": machine_info(),
                              "load_average_before": os.getloadavg()}
    report["compile"] = _compile_times(guided)
    cost: dict[str, Any] = {}
    clock = _GuidedClock(engine)
    modes = {"unconstrained": None, "regex": Guide("regex", LONG_REGEX),
             "json_schema": Guide("json_schema", json.dumps(LONG_SCHEMA))}
    for concurrency in (1, 16):
        _per_token(engine, tokenizer, concurrency, None, 8)  # warm-up
        # rounds interleave the modes so that a busy machine's drift falls on all of them alike; medians reported
        runs: dict[str, list[float]] = {mode: [] for mode in modes}
        work: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, guide in modes.items():
                measured = _per_token(engine, tokenizer, concurrency, guide, max_tokens, clock)
                runs[mode].append(measured["ms_per_token"])
                work[mode].append(measured["guided_work_ms_per_token"])
        medians = {mode: statistics.median(values) for mode, values in runs.items()}
        fastest = {mode: min(values) for mode, values in runs.items()}
        base = medians["unconstrained"]
        cost[f"c{concurrency}"] = {
            "ms_per_token_median": medians, "ms_per_token_min": fastest, "ms_per_token_runs": runs,
            "overhead_median": {mode: medians[mode] / base - 1 for mode in modes if mode != "unconstrained"},
            "overhead_min": {mode: fastest[mode] / fastest["unconstrained"] - 1
                             for mode in modes if mode != "unconstrained"},
            # the engine thread's guided work per token, as a share of the unconstrained time per token
            "guided_work_ms_per_token": {mode: statistics.median(work[mode]) for mode in modes},
            "guided_work_share": {mode: statistics.median(work[mode]) / base
                                  for mode in modes if mode != "unconstrained"}}
    report["per_token"] = cost
    report["validity"] = _validity(engine, tokenizer, per_schema, batch=20)
    report["load_average_after"] = os.getloadavg()
    results.mkdir(parents=True, exist_ok=True)
    (results / "guided.json").write_text(json.dumps(report, indent=2))
    return report
