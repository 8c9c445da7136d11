"""Guided decoding and log-probs in the CPU engine, on the demo model and its tokenizer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import jsonschema
import pytest
import torch

from engine.engine import Engine, EngineConfig
from engine.guided import Guide, GuidedDecoding, GuideError
from engine.model import Llama, load_checkpoint
from engine.request import FinishReason, GenerationRequest, StepOutput
from engine.sampling import SamplingParams
from engine.tokenizer import ChatTokenizer
from tests.conftest import DEMO_MODEL

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "vip": {"type": "boolean"}}, "required": ["name", "vip"], "additionalProperties": False},
        "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "properties": {
                "sku": {"enum": ["apple", "pear", "plum"]},
                "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
            "required": ["sku", "qty"], "additionalProperties": False}},
        "status": {"enum": ["open", "shipped", "cancelled"]},
    },
    "required": ["customer", "items", "status"],
    "additionalProperties": False,
}


@dataclass
class Recorder:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    finished: FinishReason | None = None
    error: Exception | None = None

    def is_cancelled(self) -> bool:
        return False

    def emit(self, output: StepOutput) -> None:
        self.tokens.extend(output.new_token_ids)
        if output.logprobs is not None:
            assert len(output.logprobs) == len(output.new_token_ids)
            self.logprobs.extend(output.logprobs)
            self.top.extend(output.top_logprobs or [])
        if output.finished:
            self.finished = output.finish_reason

    def fail(self, error: Exception) -> None:
        self.error = error


@pytest.fixture(scope="module")
def tokenizer() -> ChatTokenizer:
    return ChatTokenizer.from_pretrained(DEMO_MODEL)


@pytest.fixture(scope="module")
def model() -> Llama:
    return load_checkpoint(DEMO_MODEL)[0]


@pytest.fixture(scope="module")
def guided(model: Llama) -> GuidedDecoding:
    return GuidedDecoding.from_checkpoint(DEMO_MODEL, model.args.vocab_size)


@pytest.fixture
def engine(model: Llama, guided: GuidedDecoding) -> Engine:
    return Engine(model, EngineConfig(block_size=16, num_blocks=512), guided)


def run(engine: Engine, tokenizer: ChatTokenizer, prompt: str, guide: Guide | None = None, max_tokens: int = 120,
        temperature: float = 0.0, seed: int | None = None, logprobs: int | None = None, rid: str = "r") -> Recorder:
    sink = Recorder()
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed, end_id=tokenizer.eos_token_id)
    engine.submit(GenerationRequest(rid, tokenizer.encode(prompt), params, guide=guide, logprobs=logprobs), sink)
    return sink


def test_json_schema_output_parses_and_validates_greedy_and_sampled(engine: Engine, tokenizer: ChatTokenizer) -> None:
    guide = Guide("json_schema", json.dumps(ORDER_SCHEMA))
    sinks = [run(engine, tokenizer, "Order status please", guide, rid="greedy")]
    sinks += [run(engine, tokenizer, f"Order {i}", guide, temperature=1.0, seed=i, rid=f"s{i}") for i in range(6)]
    engine.run_until_done()
    for sink in sinks:
        assert sink.error is None and sink.finished is FinishReason.STOP
        value = json.loads(tokenizer.decode(sink.tokens))
        jsonschema.validate(value, ORDER_SCHEMA)


@pytest.mark.parametrize("inline_below_s", [0.0, 1.0])  # masks always on llguidance's thread / always inline
def test_masks_hold_on_either_fill_path(engine: Engine, tokenizer: ChatTokenizer, monkeypatch: pytest.MonkeyPatch,
                                        inline_below_s: float) -> None:
    import engine.guided as guided_module

    monkeypatch.setattr(guided_module, "INLINE_FILL_S", inline_below_s)
    pattern = r"[a-f]{3}-[0-9]{2}"
    sinks = [run(engine, tokenizer, f"Code {i}", Guide("regex", pattern), temperature=1.0, seed=i, rid=str(i))
             for i in range(8)]
    engine.run_until_done()
    for sink in sinks:
        assert sink.finished is FinishReason.STOP and re.fullmatch(pattern, tokenizer.decode(sink.tokens))


def test_a_failing_mask_fails_only_the_guided_requests(engine: Engine, tokenizer: ChatTokenizer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.guided import MaskFill

    def broken(self: MaskFill, logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
        raise RuntimeError("mask fill failed")

    monkeypatch.setattr(MaskFill, "apply", broken)
    free = run(engine, tokenizer, "Hello there", max_tokens=6, rid="free", logprobs=2)
    constrained = run(engine, tokenizer, "Hello there", Guide("regex", "[0-9]{5}"), rid="digits")
    engine.run_until_done()
    assert isinstance(constrained.error, RuntimeError) and not constrained.tokens
    assert free.error is None and len(free.tokens) == len(free.logprobs) == 6


def test_unconstrained_rows_in_a_guided_batch_are_unchanged(engine: Engine, model: Llama, guided: GuidedDecoding,
                                                            tokenizer: ChatTokenizer) -> None:
    alone = Engine(model, EngineConfig(block_size=16, num_blocks=512))
    expected = run(alone, tokenizer, "Hello there", max_tokens=20)
    alone.run_until_done()
    free = run(engine, tokenizer, "Hello there", max_tokens=20, rid="free")
    constrained = run(engine, tokenizer, "Hello there", Guide("regex", "[0-9]{5}"), rid="digits")
    engine.run_until_done()
    assert free.tokens == expected.tokens
    assert re.fullmatch("[0-9]{5}", tokenizer.decode(constrained.tokens))
    assert constrained.tokens != expected.tokens[:len(constrained.tokens)]  # the mask changed what greedy picks


def test_regex_output_matches_and_stops(engine: Engine, tokenizer: ChatTokenizer) -> None:
    pattern = r"(yes|no), [a-z]{2,6}-[0-9]{3}"
    sinks = [run(engine, tokenizer, "Answer", Guide("regex", pattern), temperature=0.8, seed=s, rid=str(s))
             for s in range(4)]
    engine.run_until_done()
    for sink in sinks:
        assert sink.finished is FinishReason.STOP
        assert re.fullmatch(pattern, tokenizer.decode(sink.tokens)), tokenizer.decode(sink.tokens)


def test_ebnf_grammar_with_an_embedded_schema(engine: Engine, tokenizer: ChatTokenizer) -> None:
    grammar = """
start: "Verdict: " verdict " " payload
verdict: "approve" | "reject"
payload: %json{"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
               "required": ["score"], "additionalProperties": false, "x-guidance": {"whitespace_flexible": false}}
"""
    sink = run(engine, tokenizer, "Review", Guide("ebnf_grammar", grammar))
    engine.run_until_done()
    text = tokenizer.decode(sink.tokens)
    match = re.fullmatch(r"Verdict: (approve|reject) (.*)", text, re.S)
    assert sink.finished is FinishReason.STOP and match, text
    assert 0 <= json.loads(match.group(2))["score"] <= 10


def test_json_mode_is_any_object(engine: Engine, tokenizer: ChatTokenizer) -> None:
    sink = run(engine, tokenizer, "Give me JSON", Guide("json"), max_tokens=200, temperature=0.7, seed=3)
    engine.run_until_done()
    if sink.finished is FinishReason.STOP:
        assert isinstance(json.loads(tokenizer.decode(sink.tokens)), dict)
    else:  # an unbounded object may run out of tokens; what there is must still be an object's beginning
        assert tokenizer.decode(sink.tokens).startswith("{")


@pytest.mark.parametrize(("guide", "message"), [
    (Guide("yaml", "x: 1"), "unknown guided_decoding_guide_type"),
    (Guide("json_schema", "{not json"), "not JSON"),
    (Guide("json_schema", '{"type": "object", "properties": {"a": {"type": "wat"}}}'), "json_schema"),
    (Guide("regex", "([a-z]"), "regex"),
    (Guide("regex", ""), "empty"),
    (Guide("ebnf_grammar", "start: undefined_rule"), "ebnf_grammar"),
])
def test_invalid_guide_is_refused_at_submit(engine: Engine, tokenizer: ChatTokenizer, guide: Guide,
                                            message: str) -> None:
    with pytest.raises(GuideError, match=message):
        run(engine, tokenizer, "x", guide)
    assert not engine.has_work()  # nothing was queued; the engine goes on
    ok = run(engine, tokenizer, "x", Guide("regex", "ok"))
    engine.run_until_done()
    assert tokenizer.decode(ok.tokens) == "ok"


def test_compiled_guides_are_cached_and_each_request_gets_its_own_state(guided: GuidedDecoding,
                                                                         tokenizer: ChatTokenizer) -> None:
    guide = Guide("regex", "[a-c]{1,4}z")
    before, hits = guided.compiled, guided.cache_hits
    first, second = guided.matcher(guide), guided.matcher(guide)
    assert guided.compiled == before + 1 and guided.cache_hits == hits + 1
    ids = tokenizer.encode("abz")
    assert first.consume_tokens(ids) and first.is_accepting()
    assert second.validate_tokens(ids) == len(ids) and not second.is_accepting()  # still at the start


@torch.inference_mode()
def test_logprobs_are_the_raw_log_softmax_and_greedy_is_top1(engine: Engine, model: Llama,
                                                             tokenizer: ChatTokenizer) -> None:
    prompt = "Tell me about the weather"
    sink = run(engine, tokenizer, prompt, max_tokens=12, logprobs=5)
    engine.run_until_done()
    assert len(sink.logprobs) == len(sink.tokens) == len(sink.top)
    ids = tokenizer.encode(prompt)
    for token, logprob, top in zip(sink.tokens, sink.logprobs, sink.top, strict=True):
        reference = torch.log_softmax(model(torch.tensor([ids]))[0, -1].float(), dim=-1)
        assert logprob == pytest.approx(float(reference[token]), abs=1e-3)
        assert top[0][0] == token and len(top) == 5  # greedy picked the most likely token
        assert [t for t, _ in top] == torch.topk(reference, 5).indices.tolist()
        assert all(a[1] >= b[1] for a, b in zip(top, top[1:], strict=False))
        ids.append(token)


@torch.inference_mode()
def test_logprobs_of_a_guided_token_are_the_models_not_the_masked_ones(engine: Engine, model: Llama,
                                                                      tokenizer: ChatTokenizer) -> None:
    prompt = "Pick a number"
    sink = run(engine, tokenizer, prompt, Guide("regex", "7{3}"), logprobs=0)
    engine.run_until_done()
    assert tokenizer.decode(sink.tokens) == "777"
    ids = tokenizer.encode(prompt)
    reference = torch.log_softmax(model(torch.tensor([ids]))[0, -1].float(), dim=-1)
    assert sink.logprobs[0] == pytest.approx(float(reference[sink.tokens[0]]), abs=1e-3)
    assert sink.logprobs[0] < 0 and sink.top == [[] for _ in sink.tokens]


def test_no_logprobs_unless_asked(engine: Engine, tokenizer: ChatTokenizer) -> None:
    sink = run(engine, tokenizer, "Hello", max_tokens=5)
    engine.run_until_done()
    assert sink.tokens and sink.logprobs == []


def test_top_logprobs_out_of_range_is_refused(tokenizer: ChatTokenizer) -> None:
    with pytest.raises(ValueError, match="0..20"):
        GenerationRequest("r", [1, 2], SamplingParams(), logprobs=21)
