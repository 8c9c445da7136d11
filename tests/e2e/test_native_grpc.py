"""A gRPC client with stubs generated from protos/ calls the native Chat API through Envoy's port."""

from __future__ import annotations

import grpc
import pytest
from sluice.v1 import chat_pb2, chat_pb2_grpc

from services.common.settings import Settings


@pytest.fixture(scope="module")
def auth(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


@pytest.fixture(scope="module")
def chat_stub(stack: Settings):
    channel = grpc.insecure_channel(f"{stack.host}:{stack.http_port}")  # Envoy, not the orchestrator
    yield chat_pb2_grpc.ChatStub(channel)
    channel.close()


def test_native_stream_has_start_deltas_and_finish_with_usage(chat_stub, auth, stack: Settings,
                                                             demo_tokenizer) -> None:
    request = chat_pb2.GenerateRequest(
        model=stack.model_name, messages=[chat_pb2.Message(role="user", content="Hello!")],
        sampling=chat_pb2.SamplingParams(max_tokens=32, temperature=0.0))
    call = chat_stub.Generate(request, timeout=60, metadata=auth)
    events = list(call)
    assert events[0].WhichOneof("event") == "start" and events[0].start.role == "assistant"
    assert events[-1].WhichOneof("event") == "finish"
    deltas = [e.delta for e in events[1:-1]]
    assert deltas and all(e.WhichOneof("event") == "delta" for e in events[1:-1])
    finish = events[-1].finish
    assert finish.reason in (chat_pb2.FINISH_REASON_STOP, chat_pb2.FINISH_REASON_LENGTH)
    assert finish.usage.prompt_tokens == len(demo_tokenizer.encode_chat([{"role": "user", "content": "Hello!"}]))
    assert finish.usage.completion_tokens == sum(d.token_count for d in deltas)
    assert finish.usage.total_tokens == finish.usage.prompt_tokens + finish.usage.completion_tokens
    headers = dict(call.initial_metadata())
    assert headers["x-sluice-model"] == stack.model_name and headers["x-request-id"]


def test_native_errors_are_grpc_statuses(chat_stub, auth, stack: Settings) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(chat_stub.Generate(chat_pb2.GenerateRequest(
            model="nope", messages=[chat_pb2.Message(role="user", content="hi")]), timeout=30, metadata=auth))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        list(chat_stub.Generate(chat_pb2.GenerateRequest(model=stack.model_name), timeout=30, metadata=auth))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
