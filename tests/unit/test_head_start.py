"""A generation starts while the input guard runs and is read only once the guard allows the prompt: the real
RequestLifecycle, ChatPipeline, InputGuard and Generator, a scripted engine and a safety stub whose verdict waits
until the test releases it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sluice.v1 import safety_pb2

from services.common.errors import ApiError
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.chat_request import parse_chat_request
from services.orchestrator.generate import Finished, Generator, TextDelta
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.pipeline.config import BreakerSpec, FailurePolicy, StageSpec
from services.orchestrator.pipeline.input_guard import InputGuard
from services.orchestrator.pipeline.pipeline import ChatPipeline
from services.orchestrator.pipeline.stages import Stage
from services.orchestrator.size_bound import PromptSizeBound
from services.orchestrator.tenancy.metering import UnmeteredRequest
from services.orchestrator.triton_llm import LLMChunk, LLMParams, TokenTally

ALLOW = safety_pb2.Verdict(action=safety_pb2.ACTION_ALLOW)
BLOCK = safety_pb2.Verdict(action=safety_pb2.ACTION_BLOCK, categories=[
    safety_pb2.CategoryScore(category="violent_crimes", score=0.99, triggered=True)])


class ScriptedEngine:
    """Streams `tokens` one-token chunks per request; a request stopped early still "drains" one more token into
    the tally, as Triton's stop request does."""

    def __init__(self, tokens: int = 6) -> None:
        self.tokens = tokens
        self.prompts: list[list[int]] = []
        self.stopped_early = 0
        self.whole_words: list[bool] = []

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams, model_name: str | None = None,
                     tally: TokenTally | None = None, priority: int = 0,
                     whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        tally = tally if tally is not None else TokenTally()
        self.prompts.append(list(prompt_ids))
        self.whole_words.append(whole_words)
        sent = 0
        try:
            while sent < self.tokens:
                await asyncio.sleep(0.001)  # an engine step
                sent += 1
                tally.received += 1
                yield LLMChunk([5], 0)
        finally:
            if sent < self.tokens:
                self.stopped_early += 1
                tally.received += 1  # the token that was on its way when the stop arrived


class HeldSafety:
    """CheckInput answers `verdict` once the test calls `release()`, noting how many engine streams were open."""

    def __init__(self, engine: ScriptedEngine, verdict: safety_pb2.Verdict) -> None:
        self.engine = engine
        self.verdict = verdict
        self.released = asyncio.Event()
        self.streams_open_at_verdict: int | None = None

    async def _answer(self) -> safety_pb2.Verdict:
        await self.released.wait()
        self.streams_open_at_verdict = len(self.engine.prompts)
        return self.verdict

    def CheckInput(self, request, timeout=None, metadata=()):  # noqa: N802 - the stub's name
        return self._answer()


def _spec(**options) -> StageSpec:
    return StageSpec("input_guard", "safety", "127.0.0.1:1", 5.0, FailurePolicy.FAIL_CLOSED, BreakerSpec(3, 30.0),
                     options)


def _setup(demo_tokenizer, verdict: safety_pb2.Verdict) -> tuple[RequestLifecycle, Generator, ScriptedEngine,
                                                                  HeldSafety]:
    engine = ScriptedEngine()
    deployment = Deployment(name="demo-v1", triton_model="llm_demo", checkpoint_dir=Path("/nowhere"),
                            tokenizer=demo_tokenizer, context_window=512)
    catalog = ModelCatalog([ModelEntry("sluice-demo", [(deployment, 100)])])
    generator = Generator(catalog, engine)  # type: ignore[arg-type]
    safety = HeldSafety(engine, verdict)
    pipeline = ChatPipeline(input_guard=InputGuard(Stage(_spec()), safety))  # type: ignore[arg-type]
    return RequestLifecycle(pipeline, PromptSizeBound(100_000)), generator, engine, safety


def _chat(content: str = "Tell me about harbours.", **extra):
    return parse_chat_request({"model": "sluice-demo", "messages": [{"role": "user", "content": content}],
                               "max_tokens": 6, "temperature": 0, **extra})


async def _admit_after(lifecycle, generator, safety, chat, delay_s: float = 0.02):
    meter = UnmeteredRequest()
    meter.activate()

    async def verdict_later() -> None:
        await asyncio.sleep(delay_s)  # the guard takes a while: the engine has started by then
        safety.released.set()

    releasing = asyncio.create_task(verdict_later())
    try:
        return await lifecycle.admit(chat, meter, generator, tenant="t", request_id="req"), meter
    finally:
        await releasing


def test_generation_starts_before_the_guard_answers_and_is_read_after(demo_tokenizer) -> None:
    lifecycle, generator, engine, safety = _setup(demo_tokenizer, ALLOW)

    async def scenario():
        admitted, meter = await _admit_after(lifecycle, generator, safety, _chat())
        events = [e async for e in generator.run(admitted.prepared, "req")]
        return events, meter

    events, meter = asyncio.run(scenario())
    assert safety.streams_open_at_verdict == 1  # the engine had the request before the guard's verdict
    assert len(engine.prompts) == 1 and engine.stopped_early == 0  # one stream, read from its first token
    finished = [e for e in events if isinstance(e, Finished)]
    assert sum(e.token_count for e in events if isinstance(e, TextDelta)) == 6
    assert finished[0].usage.completion_tokens == 6 == meter.account.completion_tokens


def test_a_blocked_prompt_stops_the_early_generation_and_its_tokens_are_billed(demo_tokenizer) -> None:
    lifecycle, generator, engine, safety = _setup(demo_tokenizer, BLOCK)

    async def run() -> tuple[ApiError, UnmeteredRequest]:
        meter = UnmeteredRequest()
        meter.activate()

        async def verdict_later() -> None:
            await asyncio.sleep(0.0035)  # the engine is a few tokens in when the guard blocks
            safety.released.set()

        releasing = asyncio.create_task(verdict_later())
        try:
            with pytest.raises(ApiError) as refused:
                await lifecycle.admit(_chat(), meter, generator, tenant="t", request_id="req")
        finally:
            await releasing
        return refused.value, meter

    error, meter = asyncio.run(run())
    assert error.status == 400 and error.code == "content_policy_violation"
    assert safety.streams_open_at_verdict == 1 and engine.stopped_early == 1
    produced = meter.account.completion_tokens
    assert 1 <= produced < engine.tokens  # what the engine made before the stop (and the drained one) is counted
    assert meter.account.prompt_tokens == 0  # a refused request is not billed its prompt


def test_a_prompt_with_pii_waits_for_the_guard(demo_tokenizer) -> None:
    lifecycle, generator, engine, safety = _setup(demo_tokenizer, ALLOW)

    async def scenario():
        admitted, _ = await _admit_after(lifecycle, generator, safety, _chat("Mail jane.doe@acme-corp.com the plan."))
        return [e async for e in generator.run(admitted.prepared, "req")]

    asyncio.run(scenario())
    assert safety.streams_open_at_verdict == 0 and len(engine.prompts) == 1  # the model never saw it unchecked


def test_a_rewritten_prompt_discards_the_early_generation(demo_tokenizer) -> None:
    redacted = safety_pb2.Verdict(action=safety_pb2.ACTION_REDACT, redacted_text=["Tell me about [REDACTED]."])
    lifecycle, generator, engine, safety = _setup(demo_tokenizer, redacted)

    async def scenario():
        admitted, meter = await _admit_after(lifecycle, generator, safety, _chat())
        events = [e async for e in generator.run(admitted.prepared, "req")]
        return admitted, events, meter

    admitted, events, meter = asyncio.run(scenario())
    assert len(engine.prompts) == 2 and engine.stopped_early == 1  # the early stream was stopped unread
    assert engine.prompts[1] == admitted.prepared.prompt_ids != engine.prompts[0]  # the answer is the redacted one's
    answer = [e for e in events if isinstance(e, Finished)][0]
    assert answer.usage.completion_tokens == 6
    assert meter.account.completion_tokens > 6  # the discarded stream's tokens are billed too: usage = engine


def test_retrieval_waits_for_the_stages(demo_tokenizer) -> None:
    lifecycle, _, _, _ = _setup(demo_tokenizer, ALLOW)
    assert lifecycle.pipeline.may_start_early(_chat())
    assert not lifecycle.pipeline.may_start_early(_chat(retrieval={"collections": ["docs"]}))
    assert not lifecycle.pipeline.may_start_early(_chat("x" * 5000))  # too long to pre-scan on the event loop
    assert not ChatPipeline().may_start_early(_chat())  # no input guard: nothing to overlap
    switched_off = InputGuard(Stage(_spec(overlap_generation=False)), None)  # type: ignore[arg-type]
    assert not ChatPipeline(input_guard=switched_off).may_start_early(_chat())
