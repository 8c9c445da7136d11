"""Slow and silent clients at the edge (issue S11), with the real Envoy in front of a stand-in orchestrator that streams
as fast as it is let: a client that stops reading blocks the orchestrator after a bounded number of bytes (Envoy's
buffer limits and HTTP/2 window), the stalled stream is ended by the orchestrator's idle timeout, and the overload
manager caps downstream connections."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import grpc
import httpx
import pytest
from google.api import httpbody_pb2

from services.orchestrator.stalled_streams import StalledStreamInterceptor
from tests.fake_openai_server import serve_openai
from tests.integration.test_envoy_config import _running_envoy, _start, generated  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(60)

FRAME = b"data: " + b"x" * 1000 + b"\n\n"  # about the size of a few SSE chunks
IDLE_TIMEOUT_S = 1.0


class _Flood:
    """Streams frames without pause until the write blocks; counts them and notes when its clean-up ran."""

    def __init__(self) -> None:
        self.sent = 0
        self.ended = threading.Event()

    async def ChatCompletions(self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext):
        try:
            while True:
                yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=FRAME)
                self.sent += 1
        finally:
            self.ended.set()


@pytest.fixture
def flood(generated: SimpleNamespace) -> Iterator[SimpleNamespace]:  # noqa: F811 (the imported fixture)
    servicer = type("Flood", (_Flood, generated.grpc.OpenAIServicer), {})()
    stalled = StalledStreamInterceptor(IDLE_TIMEOUT_S)
    with serve_openai(generated, servicer, name="flood", interceptors=[stalled]) as server:
        yield server


def _silent_client(port: int) -> socket.socket:
    """Sends a streaming chat request over HTTP/1.1, then never reads (a small receive buffer, as a slow device)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\n"
                 + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_a_client_that_stops_reading_blocks_the_orchestrator_soon_and_its_stream_is_ended(
        tmp_path, generated: SimpleNamespace, flood: SimpleNamespace) -> None:  # noqa: F811
    config, listen_port, admin_port = _start(tmp_path, generated.descriptor, flood.port)
    with _running_envoy(config, admin_port, tmp_path / "envoy.log"):
        sock = _silent_client(listen_port)
        try:
            assert flood.servicer.ended.wait(20), f"the stalled stream was not ended ({flood.servicer.sent} frames)"
            buffered = flood.servicer.sent * len(FRAME)
            # the client's socket, Envoy's send buffer (64 KiB), its 32 KiB per connection and the 64 KiB stream
            # window: about 130 KB, where Envoy's defaults let the orchestrator write megabytes (256 MiB window)
            assert buffered < 512 * 1024, f"{buffered} bytes were taken from the orchestrator before it blocked"
            print(f"the orchestrator wrote {buffered} bytes before the silent client blocked it")
        finally:
            sock.close()


def test_downstream_connections_are_capped(tmp_path, generated: SimpleNamespace,  # noqa: F811
                                           flood: SimpleNamespace) -> None:
    config, listen_port, admin_port = _start(tmp_path, generated.descriptor, flood.port, max_downstream_connections=2)
    with _running_envoy(config, admin_port, tmp_path / "envoy.log"):
        held = [socket.create_connection(("127.0.0.1", listen_port)) for _ in range(2)]
        try:
            time.sleep(0.3)  # both accepted by Envoy
            extra = socket.create_connection(("127.0.0.1", listen_port))
            extra.settimeout(5)
            try:
                extra.sendall(b"GET /v1/models HTTP/1.1\r\nhost: sluice\r\n\r\n")
                assert extra.recv(1024) == b""  # closed at accept: over the cap
            except ConnectionResetError:
                pass
            finally:
                extra.close()
            stats = httpx.get(f"http://127.0.0.1:{admin_port}/stats?filter=global_cx_overflow", timeout=5).text
            overflows = [int(line.rsplit(" ", 1)[1]) for line in stats.splitlines() if "global_cx_overflow" in line]
            assert sum(overflows) >= 1, stats
        finally:
            for sock in held:
                sock.close()

