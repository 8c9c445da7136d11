"""The generation plan through the real Generator with a scripted LLM (no Triton): scheduling priority reaches the
engine but not the response-cache key, and the sampling parameters do; after a fallback the prompt is tokenised and
the answer detokenised by the deployment that serves it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import ApiError, unavailable
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.chat_request import parse_chat_request
from services.orchestrator.generate import Generator, PreparedGeneration, TextDelta
from services.orchestrator.response_cache import ResponseCache
from services.orchestrator.routing import Router
from services.orchestrator.triton_llm import LLMChunk, LLMParams, TokenTally


class RecordingLLM:
    """Streams `tokens` one-token chunks and records each call's model and priority."""

    def __init__(self, tokens: int = 3) -> None:
        self.tokens = tokens
        self.calls: list[tuple[str, int]] = []
        self.whole_words: list[bool] = []

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams, model_name: str | None = None,
                     tally: TokenTally | None = None, priority: int = 0,
                     whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        self.calls.append((model_name or "", priority))
        self.whole_words.append(whole_words)
        for _ in range(min(self.tokens, params.max_tokens)):
            if tally is not None:
                tally.received += 1
            yield LLMChunk([5], 0)


def deployment(name: str, tokenizer) -> Deployment:
    return Deployment(name=name, triton_model=f"llm_{name}", checkpoint_dir=Path("/nowhere"), tokenizer=tokenizer,
                      context_window=512)


@pytest.fixture
def generator(demo_tokenizer) -> Generator:
    catalog = ModelCatalog([ModelEntry("sluice-small", [(deployment("small-v1", demo_tokenizer), 100)])])
    return Generator(catalog, RecordingLLM(), cache=ResponseCache())  # type: ignore[arg-type]


def chat(**extra):
    return parse_chat_request({"model": "sluice-small", "messages": [{"role": "user", "content": "Hi there"}],
                               "max_tokens": 3, "temperature": 0, **extra})


def prepared(generator: Generator, priority: int = 0, **extra) -> PreparedGeneration:
    plan = generator.prepare(chat(**extra), tenant="t")
    plan.release()  # only the key is looked at
    plan.admitted(tenant="t", priority=priority, cacheable=True)
    return plan


def test_priority_does_not_change_the_cache_key(generator: Generator) -> None:
    key = generator._cache_key(prepared(generator, priority=0))
    assert key is not None and generator._cache_key(prepared(generator, priority=97)) == key


@pytest.mark.parametrize("change", [{"temperature": 0.7, "seed": 1}, {"seed": 3}, {"max_tokens": 4}])
def test_sampling_parameters_change_the_cache_key(generator: Generator, change: dict) -> None:
    assert generator._cache_key(prepared(generator, **change)) != generator._cache_key(prepared(generator))


def test_a_busier_tenant_still_hits_the_cache_and_priority_reaches_the_engine(generator: Generator) -> None:
    async def answer(priority: int) -> tuple[str, str | None]:
        plan = generator.prepare(chat(), tenant="t")
        plan.admitted(tenant="t", priority=priority, cacheable=True)
        text = "".join([getattr(event, "text", "") async for event in generator.run(plan, "req")])
        return text, plan.cache_status

    first, status = asyncio.run(answer(priority=100))
    assert status == "miss" and generator.llm.calls == [("llm_small-v1", 100)]
    again, status = asyncio.run(answer(priority=98))  # two more requests of the tenant in flight: lower priority
    assert status == "hit" and again == first and len(generator.llm.calls) == 1


def test_whole_word_streaming_reaches_the_engine_and_is_not_a_cache_key_field(generator: Generator) -> None:
    plan = generator.prepare(chat(), tenant="t")
    key = generator._cache_key(prepared(generator))
    plan.admitted(tenant="t", priority=0, cacheable=True, whole_words=True)
    assert generator._cache_key(plan) == key

    async def answer() -> None:
        async for _ in generator.run(plan, "req"):
            pass

    asyncio.run(answer())
    assert generator.llm.whole_words == [True]


def test_prefix_cache_salt_is_per_tenant_but_not_a_cache_key_field(generator: Generator) -> None:
    plan = prepared(generator)
    assert plan.params.cache_salt_id is not None
    salted = PreparedGeneration(dataclasses.replace(plan.plan, params=dataclasses.replace(plan.params,
                                                                                         cache_salt_id=1)),
                                route=plan.route)
    assert generator._cache_key(salted) == generator._cache_key(plan)


def test_the_plan_cannot_be_patched_after_planning(generator: Generator) -> None:
    plan = prepared(generator, priority=5)
    for name, value in (("priority", 0), ("tenant", "other"), ("prompt_ids", [1]), ("params", None)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(plan.plan, name, value)
        with pytest.raises(AttributeError):
            setattr(plan, name, value)  # read-only views of the plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.params.temperature = 1.0  # type: ignore[misc]


def test_an_output_redaction_makes_the_run_uncacheable_without_touching_the_plan(generator: Generator) -> None:
    plan = prepared(generator)
    plan.output_redacted = True
    assert plan.cacheable is False and plan.plan.cacheable is True


# -- fallback to a deployment with another tokenizer -----------------------------------------------------------------
class ShiftedTokenizer:
    """One token per character, its code point plus `shift`: two instances with different shifts disagree on
    every id, so text through the wrong one comes out visibly wrong."""

    def __init__(self, shift: int) -> None:
        self.shift = shift
        self.eos_token_id = shift  # below every character's id

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        return "".join(m["content"] for m in messages)

    def encode(self, text: str) -> list[int]:
        return [ord(c) + self.shift for c in text]

    def detokenizer(self, keep_special=()) -> ShiftedDetokenizer:
        return ShiftedDetokenizer(self.shift)


class ShiftedDetokenizer:
    def __init__(self, shift: int) -> None:
        self.shift = shift

    def push(self, ids: list[int]) -> str:
        return "".join(chr(i - self.shift) for i in ids)

    def flush(self) -> str:
        return ""


class EchoLLM:
    """Answers with the prompt's own token ids (so the text is the prompt again); a model in `fail` is down."""

    def __init__(self, fail: dict[str, ApiError]) -> None:
        self.fail = fail
        self.prompts: dict[str, list[int]] = {}

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams, model_name: str | None = None,
                     tally: TokenTally | None = None, priority: int = 0,
                     whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        self.prompts[model_name or ""] = list(prompt_ids)
        if model_name in self.fail:
            raise self.fail[model_name]
        for token in prompt_ids[: params.max_tokens]:
            if tally is not None:
                tally.received += 1
            yield LLMChunk([token], 0)


def test_after_a_fallback_the_serving_deployments_tokenizer_encodes_and_decodes() -> None:
    old, new = ShiftedTokenizer(1000), ShiftedTokenizer(5000)
    small, large = deployment("small-v1", old), deployment("large-v1", new)
    catalog = ModelCatalog([ModelEntry("sluice-small", [(small, 100)], fallback="sluice-large"),
                            ModelEntry("sluice-large", [(large, 100)])])
    llm = EchoLLM(fail={"llm_small-v1": unavailable("down")})
    generator = Generator(catalog, llm, router=Router(catalog))  # type: ignore[arg-type]
    plan = generator.prepare(parse_chat_request({"model": "sluice-small", "max_tokens": 8,
                                                 "messages": [{"role": "user", "content": "Hi there"}]}))

    async def answer() -> list:
        return [event async for event in generator.run(plan, "req")]

    events = asyncio.run(answer())
    assert llm.prompts == {"llm_small-v1": old.encode("Hi there"), "llm_large-v1": new.encode("Hi there")}
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hi there"
    assert plan.route.deployment.name == "large-v1" and plan.params.end_id == new.eos_token_id
    assert events[-1].usage.prompt_tokens == 8
