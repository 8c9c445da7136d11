"""Order of work, cheap checks first, through Envoy and the real stack: a request refused for its size, its model
(tier) or its limits is refused before the input guard — the safety service never sees it (its own request counter
does not move), and neither does Triton."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest
from sluice.v1 import chat_pb2, chat_pb2_grpc, conversations_pb2, conversations_pb2_grpc

from services.common.settings import Settings
from tests.conftest import engine_metric

pytestmark = pytest.mark.stack

HUGE = "word " * 200_000  # 1 MB: under Envoy's body limit, far over any model's context window


def safety_checks(stack: Settings) -> float:
    """CheckInput calls the safety service has served (its sluice_rpc_requests_total)."""
    text = httpx.get(f"http://{stack.host}:{stack.safety_metrics_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sluice_rpc_requests_total") and "CheckInput" in line)


def triton_requests(stack: Settings) -> float:
    return engine_metric(stack, "nv_inference_request_success") + engine_metric(stack, "nv_inference_request_failure")


@pytest.fixture(scope="module")
def channel(stack: Settings) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(f"{stack.host}:{stack.http_port}")  # Envoy
    yield channel
    channel.close()


def client(stack: Settings, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=key, max_retries=0, timeout=60)


def test_a_huge_prompt_is_refused_at_once_without_any_stage(stack: Settings, api_key: str,
                                                            channel: grpc.Channel) -> None:
    before, engine_before = safety_checks(stack), triton_requests(stack)
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack, api_key).chat.completions.create(model=stack.model_name, max_tokens=8,
                                                       messages=[{"role": "user", "content": HUGE}])
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(grpc.RpcError) as native:
        list(chat_pb2_grpc.ChatStub(channel).Generate(chat_pb2.GenerateRequest(
            model=stack.model_name, messages=[chat_pb2.Message(role="user", content=HUGE)]),
            metadata=(("authorization", f"Bearer {api_key}"),), timeout=30))
    assert native.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context" in (native.value.details() or "")
    assert time.monotonic() - started < 5  # refused by size, not after a stage's timeout
    assert safety_checks(stack) == before
    assert triton_requests(stack) == engine_before


def test_a_prompt_over_the_context_window_never_reaches_the_safety_service(stack: Settings, api_key: str) -> None:
    before = safety_checks(stack)
    with pytest.raises(openai.BadRequestError) as caught:  # under the character bound, over 1024 tokens
        client(stack, api_key).chat.completions.create(model=stack.model_name, max_tokens=8, messages=[
            {"role": "user", "content": "alpha beta gamma delta " * 400}])
    assert caught.value.body["code"] == "context_length_exceeded"
    assert safety_checks(stack) == before


def test_a_request_over_its_limits_never_reaches_the_safety_service(stack: Settings, tenant_keys) -> None:
    key = tenant_keys("order-tpm", "enterprise", tpm=40)  # prompt + max_tokens above 40: refused as too large
    before = safety_checks(stack)
    with pytest.raises(openai.RateLimitError) as caught:
        client(stack, key).chat.completions.create(model=stack.model_name, max_tokens=64,
                                                   messages=[{"role": "user", "content": "Say hello."}])
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert safety_checks(stack) == before


def test_a_model_outside_the_tier_never_reaches_the_safety_service(stack: Settings, tenant_keys) -> None:
    key = tenant_keys("order-free", "free")
    before = safety_checks(stack)
    with pytest.raises(openai.PermissionDeniedError):
        client(stack, key).chat.completions.create(model="sluice-demo", max_tokens=8,
                                                   messages=[{"role": "user", "content": "Say hello."}])
    assert safety_checks(stack) == before


def test_conversations_refuse_a_huge_message_before_any_stage(stack: Settings, api_key: str,
                                                              channel: grpc.Channel) -> None:
    stub = conversations_pb2_grpc.ConversationsStub(channel)
    auth = (("authorization", f"Bearer {api_key}"),)
    created = stub.Create(conversations_pb2.CreateConversationRequest(model=stack.model_name), timeout=10,
                          metadata=auth)
    before = safety_checks(stack)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Send(conversations_pb2.SendMessageRequest(conversation_id=created.id, content=HUGE), timeout=30,
                       metadata=auth))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert safety_checks(stack) == before
    stored = stub.Get(conversations_pb2.GetConversationRequest(id=created.id), timeout=10, metadata=auth)
    assert not stored.messages
