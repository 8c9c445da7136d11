"""A request holds its place in the deployment's in-flight count from the moment the router admits it until it ends —
whichever way it ends — so a burst is judged against every earlier admission, and nothing leaks. Driven through the
real Generator and OpenAI facade with a scripted LLM (no Triton), and the caller's tier from the principal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.api import httpbody_pb2

from services.common.errors import ApiError, unavailable
from services.orchestrator import openai_facade
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.chat_request import parse_chat_request
from services.orchestrator.generate import Generator
from services.orchestrator.routing import Router, RoutingPolicy
from services.orchestrator.tenancy.metering import UnmeteredRequest
from services.orchestrator.tenancy.principal import Principal, current_principal
from services.orchestrator.tenancy.tiers import Limits, Tier
from services.orchestrator.triton_llm import LLMChunk, LLMParams, TokenTally


class ScriptedLLM:
    """Streams `tokens` one-token chunks per request once `gate` is open; a model in `fail` raises at once."""

    def __init__(self, tokens: int = 3) -> None:
        self.tokens = tokens
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: dict[str, ApiError] = {}
        self.streams: list[str] = []

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams, model_name: str | None = None,
                     tally: TokenTally | None = None, priority: int = 0,
                     whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        self.streams.append(model_name or "")
        if model_name in self.fail:
            raise self.fail[model_name]
        await self.gate.wait()
        for _ in range(min(self.tokens, params.max_tokens)):
            if tally is not None:
                tally.received += 1
            yield LLMChunk([5], 0)


def deployment(name: str, tokenizer, max_queue: int = 64) -> Deployment:
    return Deployment(name=name, triton_model=f"llm_{name}", checkpoint_dir=Path("/nowhere"), tokenizer=tokenizer,
                      context_window=512, max_queue=max_queue)


@pytest.fixture
def generator(demo_tokenizer) -> Generator:
    small, large = deployment("small-v1", demo_tokenizer), deployment("large-v1", demo_tokenizer)
    catalog = ModelCatalog([ModelEntry("sluice-small", [(small, 100)], fallback="sluice-large"),
                            ModelEntry("sluice-large", [(large, 100)])])
    policy = RoutingPolicy(auto_small="sluice-small", auto_large="sluice-large", auto_large_tiers=("enterprise",))
    return Generator(catalog, ScriptedLLM(), router=Router(catalog, policy))  # type: ignore[arg-type]


def chat(model: str = "sluice-small", **extra):
    return parse_chat_request({"model": model, "messages": [{"role": "user", "content": "Hi there"}],
                               "max_tokens": 3, **extra})


def in_flight(generator: Generator) -> dict[str, int]:
    return {name: health.in_flight for name, health in generator.router.health.items()}


IDLE = {"small-v1": 0, "large-v1": 0}


async def drain(generator: Generator, prepared) -> list:
    return [event async for event in generator.run(prepared, "req")]


def principal(tier: str) -> Principal:
    return Principal(tenant_id="t", key_id="k", tier=Tier(tier, Limits()), key_limits=Limits())


def test_counted_from_admission_and_released_when_done(generator: Generator) -> None:
    prepared = generator.prepare(chat())
    assert in_flight(generator) == {"small-v1": 1, "large-v1": 0}  # before any stream started
    asyncio.run(drain(generator, prepared))
    assert in_flight(generator) == IDLE
    prepared.release()  # a second release is harmless
    assert in_flight(generator) == IDLE


def test_released_when_generation_fails(generator: Generator) -> None:
    generator.llm.fail["llm_small-v1"] = ApiError(500, "boom", "server_error")
    prepared = generator.prepare(chat())
    with pytest.raises(ApiError):
        asyncio.run(drain(generator, prepared))
    assert in_flight(generator) == IDLE


def test_released_when_the_client_goes_away_mid_stream(generator: Generator) -> None:
    generator.llm.gate.clear()  # the stream starts and waits for tokens

    async def scenario() -> None:
        prepared = generator.prepare(chat())
        task = asyncio.create_task(drain(generator, prepared))
        await asyncio.sleep(0.01)
        assert generator.llm.streams == ["llm_small-v1"] and in_flight(generator)["small-v1"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert in_flight(generator) == IDLE


def test_released_once_when_the_request_never_starts(generator: Generator) -> None:
    other = generator.prepare(chat())  # another request, still in flight throughout
    prepared = generator.prepare(chat())
    events = generator.run(prepared, "req")
    asyncio.run(events.aclose())  # closed before it started: its clean-up never runs ...
    assert in_flight(generator)["small-v1"] == 2
    prepared.release()  # ... so the caller gives the place back
    prepared.release()
    assert in_flight(generator)["small-v1"] == 1  # exactly once: the other request still counts
    other.release()
    assert in_flight(generator) == IDLE


def test_released_when_prepare_fails_after_routing(generator: Generator) -> None:
    with pytest.raises(ApiError) as info:
        generator.prepare(chat(max_tokens=10_000))  # past the context window: 400 after the route was taken
    assert info.value.status == 400 and in_flight(generator) == IDLE


def test_a_failure_before_the_first_token_moves_the_reservation_to_the_fallback(generator: Generator) -> None:
    generator.llm.fail["llm_small-v1"] = unavailable("down")
    generator.llm.gate.clear()

    async def scenario() -> list:
        prepared = generator.prepare(chat())
        task = asyncio.create_task(drain(generator, prepared))
        await asyncio.sleep(0.01)
        assert in_flight(generator) == {"small-v1": 0, "large-v1": 1}  # held on the deployment actually serving
        generator.llm.gate.set()
        return await task

    events = asyncio.run(scenario())
    assert events[-1].reason == "length" and generator.llm.streams == ["llm_small-v1", "llm_large-v1"]
    assert in_flight(generator) == IDLE


def test_a_burst_beyond_the_admitted_depth_gets_503_overloaded_for_the_excess(generator: Generator) -> None:
    router = generator.router
    for ahead in range(8):  # 50 ms a place: the 500 ms SLO fits 10 waiting for their first token
        router.admission.observe_ttft("large-v1", 0.05 * (ahead + 1), ahead=ahead)
    generator.llm.gate.clear()

    async def one() -> str:
        try:
            prepared = generator.prepare(chat("sluice-large"))
        except ApiError as error:
            return f"{error.status} {error.code}"
        await drain(generator, prepared)
        return "ok"

    async def burst() -> list[str]:
        tasks = [asyncio.create_task(one()) for _ in range(14)]
        await asyncio.sleep(0.01)  # all arrived; none has a token yet
        assert in_flight(generator)["large-v1"] == 10
        generator.llm.gate.set()
        return await asyncio.gather(*tasks)

    outcomes = asyncio.run(burst())
    assert outcomes.count("ok") == 10 and outcomes.count("503 overloaded") == 4
    assert in_flight(generator) == IDLE


def test_auto_routes_by_the_callers_tier(generator: Generator) -> None:
    token = current_principal.set(principal("enterprise"))
    try:
        prepared = generator.prepare(chat("auto"))
        assert prepared.entry.name == "sluice-large" and prepared.route.reason == "auto:tier"
        prepared.release()
    finally:
        current_principal.reset(token)
    token = current_principal.set(principal("free"))
    try:
        prepared = generator.prepare(chat("auto"))
        assert prepared.entry.name == "sluice-small" and prepared.route.reason == "auto:short"
        prepared.release()
    finally:
        current_principal.reset(token)


# -- through the OpenAI facade ---------------------------------------------------------------------------------------
class FakeContext:
    def invocation_metadata(self) -> tuple:
        return ()

    async def send_initial_metadata(self, metadata) -> None:
        self.metadata = dict(metadata)


class QuotaExhausted(UnmeteredRequest):
    async def admit(self, model: str, prompt_tokens: int, max_tokens: int) -> int:
        raise ApiError(429, "quota", "rate_limit_error", None, "rate_limit_exceeded", 5.0)


def body(stream: bool) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps({
        "model": "sluice-small", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
        "stream": stream}).encode())


def test_facade_releases_on_a_quota_rejection_after_routing(generator: Generator,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_facade, "begin_request", lambda *a, **k: QuotaExhausted())
    facade = openai_facade.OpenAIFacade(generator.catalog, generator)
    context = FakeContext()

    async def call() -> list:
        return [frame async for frame in facade.ChatCompletions(body(stream=False), context)]

    frames = asyncio.run(call())
    assert context.metadata["x-http-status"] == "429" and b"quota" in frames[0].data
    assert in_flight(generator) == IDLE


def test_facade_releases_when_the_client_disconnects_mid_stream(generator: Generator) -> None:
    facade = openai_facade.OpenAIFacade(generator.catalog, generator)
    generator.llm.tokens = 50

    async def call() -> None:
        frames = facade.ChatCompletions(body(stream=True), FakeContext())
        await anext(frames)  # the role chunk: the stream is open
        assert in_flight(generator)["small-v1"] == 1
        await frames.aclose()  # the client went away

    asyncio.run(call())
    assert in_flight(generator) == IDLE
