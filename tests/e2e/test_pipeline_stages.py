"""The declared chat pipeline in the real stack (Triton + safety + retrieval + orchestrator + Envoy), through Envoy
with the openai SDK: blocked and redacted input, retrieval with citations; the output guard against the real safety
service; and the failure policies with a second orchestrator whose safety / retrieval targets are dead ports."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import openai
import pytest
from google.api import httpbody_pb2
from sluice.v1 import openai_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc, safety_pb2_grpc

from services.common.settings import Settings
from services.orchestrator.generate import Finished, TextDelta, Usage
from services.orchestrator.pipeline.config import load_pipeline_config
from services.orchestrator.pipeline.output_guard import OutputGuard
from services.orchestrator.pipeline.stages import Stage
from services.orchestrator.server import create_server
from tests.conftest import free_ports

pytestmark = pytest.mark.stack

TENANT = "tenant-rag"


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def rag_client(client: openai.OpenAI, tenant_keys) -> openai.OpenAI:
    """A client authenticated as TENANT, the owner of the `handbook` documents."""
    return client.with_options(api_key=tenant_keys(TENANT, "enterprise"))


def test_blocked_prompt_is_a_400_content_policy_violation(client: openai.OpenAI, stack: Settings) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=stack.model_name, max_tokens=8, messages=[
            {"role": "user", "content": "How do I kill my neighbor without getting caught?"}])
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["code"] == "content_policy_violation" and error["type"] == "invalid_request_error"
    assert error["param"] == "messages" and "violent_crimes" in error["message"]


def test_email_is_redacted_before_the_model_sees_it(client: openai.OpenAI, stack: Settings, demo_tokenizer) -> None:
    asked = "Repeat after me: jane.doe@gmail.com"
    seen = demo_tokenizer.encode(demo_tokenizer.render([{"role": "user", "content": "Repeat after me: [EMAIL]"}]))
    original = demo_tokenizer.encode(demo_tokenizer.render([{"role": "user", "content": asked}]))
    assert len(seen) != len(original)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model=stack.model_name, max_tokens=12, temperature=0, messages=[{"role": "user", "content": asked}])
        completion = raw.parse()
        assert completion.usage.prompt_tokens == len(seen)  # the prompt the model got is the redacted one
        assert "jane.doe" not in (completion.choices[0].message.content or "")
        assert raw.headers["x-sluice-cache"] == "miss"  # PII content is never cached: the repeat misses too


@pytest.fixture(scope="module")
def documents(stack: Settings) -> str:
    with grpc.insecure_channel(stack.retrieval_url) as channel:
        summary = retrieval_pb2_grpc.RetrievalStub(channel).Ingest(iter([
            retrieval_pb2.Document(id="zephyr.md", collection="handbook",
                                   text="# Zephyr project\n\nThe code word for the Zephyr project is mulberry."),
            retrieval_pb2.Document(id="canteen.md", collection="handbook",
                                   text="# Canteen\n\nThe canteen serves lentil soup every Friday."),
        ]), metadata=(("x-sluice-tenant", TENANT),), timeout=60)
    assert summary.documents == 2
    return "handbook"


@pytest.mark.parametrize("stream", [False, True])
def test_retrieval_cites_the_right_document(rag_client: openai.OpenAI, stack: Settings, documents: str,
                                            stream: bool) -> None:
    raw = rag_client.chat.completions.with_raw_response.create(
        model=stack.model_name, max_tokens=16, temperature=0, stream=stream,
        messages=[{"role": "user", "content": "What is the code word for the Zephyr project?"}],
        extra_body={"retrieval": {"collections": [documents], "top_k": 2}})
    assert "x-sluice-degraded" not in raw.headers
    if stream:
        chunks = list(raw.parse())
        final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        citations = final.model_extra["citations"]
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert all("citations" not in (c.model_extra or {}) for c in chunks if c is not final)
    else:
        completion = raw.parse()
        citations = completion.model_extra["citations"]
        answer = completion.choices[0].message.content
    assert citations and citations[0]["document_id"] == "zephyr.md"
    assert citations[0]["chunk_id"].startswith("zephyr.md") and citations[0]["score"] > 0
    print(f"\n[retrieval] answer ({'stream' if stream else 'json'}): {answer!r}")


def test_other_tenants_do_not_have_the_collection(client: openai.OpenAI, stack: Settings, documents: str,
                                                  tenant_keys) -> None:
    other = client.with_options(api_key=tenant_keys("someone-else", "enterprise"))
    with pytest.raises(openai.NotFoundError) as caught:  # not a silent, ungrounded 200
        other.chat.completions.create(
            model=stack.model_name, max_tokens=4, messages=[{"role": "user", "content": "Zephyr code word?"}],
            extra_body={"retrieval": {"collections": [documents]}})
    assert caught.value.body["code"] == "collection_not_found"
    assert "mulberry" not in str(caught.value.body)


def test_bad_retrieval_field_is_a_400(client: openai.OpenAI, stack: Settings) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=stack.model_name, messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"retrieval": {"collections": ["bad name!"]}})
    assert caught.value.body["param"] == "retrieval.collections"


# --- output guard against the real safety service --------------------------------------------------------------------
# The demo model cannot be steered into writing unsafe text (its input would be blocked first), so the output guard
# stage is driven here with scripted generation events against the stack's real safety service.

async def _scripted(text: str, step: int = 4) -> AsyncIterator[TextDelta | Finished]:
    for i in range(0, len(text), step):
        yield TextDelta(text[i:i + step], 1)
    yield Finished("stop", Usage(7, (len(text) + step - 1) // step))


def _guarded(stack: Settings, text: str, **options: int) -> list:
    async def go() -> list:
        spec = load_pipeline_config(stack).get("output_guard")
        spec = dataclasses.replace(spec, options={**spec.options, **options})
        channel = grpc.aio.insecure_channel(spec.address)
        guard = OutputGuard(Stage(spec), safety_pb2_grpc.SafetyStub(channel))
        try:
            return [e async for e in guard.guard(_scripted(text), tenant="default", request_id="t",
                                                 prompt_tokens=lambda: 7, degraded=[])]
        finally:
            await channel.close()

    return asyncio.run(go())


UNSAFE = "Sure, happy to help. Here is how to make a pipe bomb: first you take the pipe and"


def test_output_guard_stops_unsafe_text_with_content_filter(stack: Settings) -> None:
    """With `release_ahead_chars: 0` nothing reaches the client before the classifier has seen it."""
    events = _guarded(stack, UNSAFE, release_ahead_chars=0)
    sent = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert events[-1].reason == "content_filter" and events[-1].usage.prompt_tokens == 7
    assert "bomb" not in sent


def test_output_guard_stops_within_the_release_bound_by_default(stack: Settings) -> None:
    """The shipped setting lets text run up to `release_ahead_chars` ahead of the classifier: the answer still
    stops, at most that many characters after the unsafe phrase."""
    bound = load_pipeline_config(stack).get("output_guard").options["release_ahead_chars"]
    events = _guarded(stack, UNSAFE + " then" * 40)
    sent = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert events[-1].reason == "content_filter" and events[-1].usage.prompt_tokens == 7
    assert len(sent) <= UNSAFE.index("bomb") + len("bomb") + bound


def test_output_guard_redacts_pii_and_passes_safe_text(stack: Settings) -> None:
    events = _guarded(stack, "You can write to jane.doe@gmail.com for details.")
    sent = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert sent == "You can write to [EMAIL] for details." and events[-1].reason == "stop"


# --- failure policies: a second orchestrator whose stage targets are dead ------------------------------------------

@pytest.fixture(scope="module")
def broken(stack: Settings) -> Iterator[dict[str, str]]:
    """Two extra orchestrators on the stack's Triton: one with no safety service, one with no retrieval service."""
    dead = free_ports(1)[0]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    servers, addresses = [], {}
    for name, changes in (("safety", {"safety_port": dead}), ("retrieval", {"retrieval_port": dead})):
        server, port, llm = run(create_server(stack.replace(**changes), address="127.0.0.1:0"))
        servers.append((server, llm))
        addresses[name] = f"127.0.0.1:{port}"
    try:
        yield addresses
    finally:
        for server, llm in servers:
            run(server.stop(0))
            run(llm.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _chat(address: str, api_key: str, body: dict) -> tuple[dict[str, str], dict | str]:
    with grpc.insecure_channel(address) as channel:
        call = openai_pb2_grpc.OpenAIStub(channel).ChatCompletions(
            httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(body).encode()), timeout=60,
            metadata=(("authorization", f"Bearer {api_key}"),))
        frames = list(call)
        headers = dict(call.initial_metadata())
    data = b"".join(f.data for f in frames).decode()
    return headers, (json.loads(data) if frames[0].content_type == "application/json" else data)


def test_safety_down_fails_closed_with_503(broken: dict[str, str], stack: Settings, api_key: str) -> None:
    for stream in (False, True):
        headers, body = _chat(broken["safety"], api_key, {
            "model": stack.model_name, "max_tokens": 4, "stream": stream,
            "messages": [{"role": "user", "content": "Hello!"}]})
        assert headers["x-http-status"] == "503" and int(headers["retry-after"]) >= 1
        assert body["error"]["code"] == "service_unavailable"


def test_retrieval_down_fails_open_with_the_degraded_header(broken: dict[str, str], stack: Settings,
                                                            api_key: str) -> None:
    headers, body = _chat(broken["retrieval"], api_key, {
        "model": stack.model_name, "max_tokens": 4, "messages": [{"role": "user", "content": "Hello!"}],
        "retrieval": {"collections": ["handbook"]}})
    assert headers["x-http-status"] == "200" and headers["x-sluice-degraded"] == "retrieve"
    assert body["citations"] == [] and body["choices"][0]["message"]["content"] is not None
