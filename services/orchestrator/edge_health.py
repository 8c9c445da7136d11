"""GET /healthz and GET /readyz on the API port (sluice.v1.Edge, transcoded by Envoy; no API key needed).

/healthz answers 200 whenever the edge and an orchestrator answer (liveness). /readyz asks every part a chat request
needs: the LLM slot on Triton (any replica) and the gRPC health of each declared stage's service; 503 while one is
not ready, with which one in the body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sluice.v1 import edge_pb2_grpc

CHECK_TIMEOUT_S = 2.0


def _body(payload: dict) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(payload).encode())


class EdgeHealth(edge_pb2_grpc.EdgeServicer):
    def __init__(self, engine_ready: Callable[[], Awaitable[bool]], stage_addresses: Mapping[str, str]) -> None:
        self.engine_ready = engine_ready
        self.stage_addresses = dict(stage_addresses)  # stage name → host:port of its service
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def Live(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        await context.send_initial_metadata((("x-http-status", "200"), ("cache-control", "no-store")))
        return _body({"status": "ok"})

    async def _serving(self, address: str) -> bool:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        try:
            reply = await health_pb2_grpc.HealthStub(self._channels[address]).Check(
                health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def _engine(self) -> bool:
        try:
            return await asyncio.wait_for(self.engine_ready(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return False

    async def Ready(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        names = ["generate", *self.stage_addresses]
        answers = await asyncio.gather(self._engine(), *(self._serving(a) for a in self.stage_addresses.values()))
        checks = {name: "ready" if ok else "not ready" for name, ok in zip(names, answers, strict=True)}
        ready = all(answers)
        await context.send_initial_metadata((("x-http-status", "200" if ready else "503"),
                                             ("cache-control", "no-store")))
        return _body({"status": "ready" if ready else "not ready", "checks": checks})

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
