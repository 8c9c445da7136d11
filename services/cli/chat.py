"""`sluice chat "message"`: stream one reply through Envoy with the native gRPC API, as SLUICE_API_KEY or the local
dev tenant."""

from __future__ import annotations

import sys

import grpc
from sluice.v1 import chat_pb2, chat_pb2_grpc

from services.common.settings import Settings
from services.orchestrator.tenancy.dev_key import local_api_key


def chat(message: str, *, model: str | None = None, max_tokens: int = 128, settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    request = chat_pb2.GenerateRequest(model=model or settings.model_name,
                                       messages=[chat_pb2.Message(role="user", content=message)],
                                       sampling=chat_pb2.SamplingParams(max_tokens=max_tokens))
    key = local_api_key(settings)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(f"{settings.host}:{settings.http_port}") as channel:
        try:
            for event in chat_pb2_grpc.ChatStub(channel).Generate(request, timeout=300, metadata=metadata):
                if event.WhichOneof("event") == "delta":
                    print(event.delta.content, end="", flush=True)
                elif event.WhichOneof("event") == "finish":
                    usage = event.finish.usage
                    reason = chat_pb2.FinishReason.Name(event.finish.reason).removeprefix("FINISH_REASON_").lower()
                    print(f"\n[{reason}; {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens]")
        except grpc.RpcError as exc:
            print(f"sluice: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0
