"""Graceful shutdown: stopping the orchestrator lets in-flight streams finish within the grace period, and refuses
new calls meanwhile."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sluice.v1 import chat_pb2, chat_pb2_grpc

from services.common.settings import Settings
from services.orchestrator.server import create_server


def _request(settings: Settings, tokens: int) -> chat_pb2.GenerateRequest:
    return chat_pb2.GenerateRequest(
        model=settings.model_name, messages=[chat_pb2.Message(role="user", content="Hello!")],
        sampling=chat_pb2.SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.0))


def _auth(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


def test_in_flight_stream_finishes_during_graceful_stop(stack: Settings, api_key: str) -> None:
    async def scenario() -> tuple[list[chat_pb2.GenerateResponse], grpc.StatusCode | None, str]:
        server, port, llm = await create_server(stack, address="127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        call = chat_pb2_grpc.ChatStub(channel).Generate(_request(stack, 120), metadata=_auth(api_key))
        events = [await call.read()]  # the stream is running
        stopping = asyncio.create_task(server.stop(grace=30))
        await asyncio.sleep(0.05)
        late_code = None
        try:
            late = chat_pb2_grpc.ChatStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}")).Generate(
                _request(stack, 1), timeout=5, metadata=_auth(api_key))
            await late.read()
        except grpc.aio.AioRpcError as exc:
            late_code = exc.code()
        while (event := await call.read()) is not grpc.aio.EOF:
            events.append(event)
        await stopping
        await llm.close()
        await channel.close()
        return events, late_code, events[-1].WhichOneof("event")

    events, late_code, last = asyncio.run(scenario())
    assert last == "finish"
    assert events[-1].finish.usage.completion_tokens == 120
    assert late_code is not None  # no new work is accepted while draining


@pytest.mark.parametrize("grace", [0.2])
def test_stream_is_cut_when_grace_runs_out(stack: Settings, api_key: str, grace: float) -> None:
    async def scenario() -> grpc.StatusCode:
        server, port, llm = await create_server(stack, address="127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        call = chat_pb2_grpc.ChatStub(channel).Generate(_request(stack, 400), metadata=_auth(api_key))
        await call.read()
        await server.stop(grace=grace)
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            await llm.close()
            await channel.close()
        return grpc.StatusCode.OK

    assert asyncio.run(scenario()) != grpc.StatusCode.OK
