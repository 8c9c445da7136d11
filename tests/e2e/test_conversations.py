"""The native Conversations API through Envoy's port with stubs generated from protos/: stored multi-turn history,
list/get/delete, errors as gRPC statuses, and a client that hangs up mid-stream leaving an incomplete reply."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sluice.v1 import chat_pb2, conversations_pb2, conversations_pb2_grpc

from services.common.settings import Settings

GREEDY = chat_pb2.SamplingParams(max_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def channel(stack: Settings):
    channel = grpc.insecure_channel(f"{stack.host}:{stack.http_port}")  # Envoy, not the orchestrator
    yield channel
    channel.close()


@pytest.fixture(scope="module")
def auth(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> conversations_pb2_grpc.ConversationsStub:
    return conversations_pb2_grpc.ConversationsStub(channel)


def send(stub, auth, conversation_id: str, content: str, sampling: chat_pb2.SamplingParams = GREEDY):
    events = list(stub.Send(conversations_pb2.SendMessageRequest(
        conversation_id=conversation_id, content=content, sampling=sampling), timeout=120, metadata=auth))
    assert events[0].WhichOneof("event") == "start" and events[-1].WhichOneof("event") == "finish"
    return "".join(e.delta.content for e in events[1:-1]), events[-1].finish


def test_the_service_is_healthy_through_envoy(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="sluice.v1.Conversations"), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_multi_turn_conversation_is_stored_and_uses_earlier_turns(stub, auth, stack: Settings, demo_tokenizer) -> None:
    created = stub.Create(conversations_pb2.CreateConversationRequest(model=stack.model_name, title="names",
                                                                      user="e2e-user"), timeout=10, metadata=auth)
    assert created.id and created.model == stack.model_name and not created.messages
    first, first_finish = send(stub, auth, created.id, "Hi, my name is Talia.")
    second, second_finish = send(stub, auth, created.id, "What is my name?")
    assert "Talia" in second, f"the reply does not use the earlier turn: {second!r}"

    got = stub.Get(conversations_pb2.GetConversationRequest(id=created.id), timeout=10, metadata=auth)
    assert [(m.position, m.role, m.content) for m in got.messages] == [
        (0, "user", "Hi, my name is Talia."), (1, "assistant", first),
        (2, "user", "What is my name?"), (3, "assistant", second)]
    assert all(m.status == conversations_pb2.MESSAGE_STATUS_COMPLETE for m in got.messages)
    for message in (got.messages[0], got.messages[2]):
        assert message.prompt_tokens == len(demo_tokenizer.encode(message.content))
        assert not message.HasField("completion_tokens")
    for message, finish in ((got.messages[1], first_finish), (got.messages[3], second_finish)):
        assert message.prompt_tokens == finish.usage.prompt_tokens
        assert message.completion_tokens == finish.usage.completion_tokens > 0
        assert message.finish_reason == finish.reason
    history = [{"role": m.role, "content": m.content} for m in got.messages[:3]]
    assert second_finish.usage.prompt_tokens == len(demo_tokenizer.encode_chat(history))  # the whole history

    listed = stub.List(conversations_pb2.ListConversationsRequest(user="e2e-user"), timeout=10, metadata=auth)
    assert listed.conversations[0].id == created.id and not listed.conversations[0].messages
    assert listed.conversations[0].updated >= created.created

    stub.Delete(conversations_pb2.DeleteConversationRequest(id=created.id), timeout=10, metadata=auth)
    with pytest.raises(grpc.RpcError) as info:
        stub.Get(conversations_pb2.GetConversationRequest(id=created.id), timeout=10, metadata=auth)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    listed = stub.List(conversations_pb2.ListConversationsRequest(user="e2e-user"), timeout=10, metadata=auth)
    assert created.id not in [c.id for c in listed.conversations]


def test_a_client_that_hangs_up_leaves_an_incomplete_reply(stub, auth, stack: Settings) -> None:
    created = stub.Create(conversations_pb2.CreateConversationRequest(model=stack.model_name), timeout=10,
                          metadata=auth)
    sampling = chat_pb2.SamplingParams(max_tokens=400, min_tokens=400, temperature=1.0, seed=7)
    call = stub.Send(conversations_pb2.SendMessageRequest(conversation_id=created.id, content="Tell me a long story.",
                                                          sampling=sampling), timeout=120, metadata=auth)
    received, tokens = [], 0
    for event in call:
        if event.WhichOneof("event") == "delta":
            received.append(event.delta.content)
            tokens += event.delta.token_count
            if tokens >= 8:
                break
    call.cancel()

    deadline = time.monotonic() + 15
    while True:
        messages = stub.Get(conversations_pb2.GetConversationRequest(id=created.id), timeout=10, metadata=auth).messages
        if len(messages) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [m.role for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply.status == conversations_pb2.MESSAGE_STATUS_INCOMPLETE
    assert reply.content.startswith("".join(received)) and reply.content
    assert tokens <= reply.completion_tokens < 400
    assert reply.finish_reason == chat_pb2.FINISH_REASON_UNSPECIFIED


def test_errors_are_grpc_statuses_and_store_nothing(stub, auth, stack: Settings) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Create(conversations_pb2.CreateConversationRequest(model="nope"), timeout=10, metadata=auth)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        send(stub, auth, "no-such-conversation", "hello")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    created = stub.Create(conversations_pb2.CreateConversationRequest(model=stack.model_name,
                                                                      system_prompt="You are terse."),
                          timeout=10, metadata=auth)
    assert created.system_prompt == "You are terse."
    with pytest.raises(grpc.RpcError) as info:
        send(stub, auth, created.id, "word " * 20000)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "maximum context length" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        send(stub, auth, created.id, "")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = stub.Get(conversations_pb2.GetConversationRequest(id=created.id), timeout=10, metadata=auth)
    assert not got.messages
