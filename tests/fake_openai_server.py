"""A stand-in for the orchestrator's OpenAI facade: a grpc.aio server on an ephemeral port, with its own event loop on
a background thread, serving whatever servicer a test gives it (Envoy's config tests put the real Envoy in front)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace

import grpc


@contextmanager
def serve_openai(generated: SimpleNamespace, servicer: object, *, name: str = "orchestrator",
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> Iterator[SimpleNamespace]:
    """Yields SimpleNamespace(port, servicer) while the server runs."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=list(interceptors))
        generated.grpc.add_OpenAIServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield SimpleNamespace(port=port, servicer=servicer)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
