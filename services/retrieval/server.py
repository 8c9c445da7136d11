"""The retrieval service's gRPC server (Retrieval + health + reflection), built by a factory so tests bind port 0."""

from __future__ import annotations

import asyncio
import logging

import grpc
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.service_main import run_service, server_options, start_serving, wait_for_stop_signal
from services.common.settings import Settings
from services.common.telemetry import server_interceptors
from services.retrieval.embedding_client import EmbeddingClient
from services.retrieval.embedding_model import counting_tokenizer
from services.retrieval.indexer import Indexer
from services.retrieval.search import HybridSearcher
from services.retrieval.service import RetrievalService
from services.retrieval.store import MilvusStore

log = logging.getLogger("sluice.retrieval")

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name


async def create_server(settings: Settings, address: str | None = None,
                        store: MilvusStore | None = None) -> tuple[grpc.aio.Server, int, MilvusStore, EmbeddingClient]:
    """Builds and starts the server; returns it, the bound port, and what `serve` must close after it stops."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    store = store or await asyncio.to_thread(MilvusStore, settings.milvus_target)
    await asyncio.to_thread(counting_tokenizer)  # load the tokenizer before declaring ourselves ready
    embedder = EmbeddingClient(settings.triton_grpc_urls)  # any Triton replica
    service = RetrievalService(store, Indexer(store, embedder), HybridSearcher(store, embedder))
    server = grpc.aio.server(interceptors=server_interceptors("retrieval", settings),
                             options=server_options(64 * 1024 * 1024))
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(service, server)
    port = await start_serving(server, address or settings.retrieval_url, (SERVICE_NAME,), "retrieval service")
    return server, port, store, embedder


async def serve(settings: Settings, grace_seconds: float) -> None:
    server, port, store, embedder = await create_server(settings)
    log.info("retrieval listening on %s:%d (milvus %s)", settings.host, port,
             "server" if settings.milvus_uri else "lite")
    await wait_for_stop_signal()
    await server.stop(grace_seconds)
    await embedder.close()
    await asyncio.to_thread(store.close)


def main() -> None:
    run_service("Sluice retrieval service", serve, default_grace=10.0,
                grace_help="seconds in-flight ingests and searches get at shutdown")


if __name__ == "__main__":
    main()
