"""The orchestrator's gRPC server: OpenAI facade + native Chat + Conversations + health + reflection, built by a
factory. Database migrations are applied at start."""

from __future__ import annotations

import asyncio
import logging

import grpc
from sluice.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    conversations_pb2,
    conversations_pb2_grpc,
    edge_pb2,
    edge_pb2_grpc,
    openai_pb2,
    openai_pb2_grpc,
    vector_stores_pb2,
    vector_stores_pb2_grpc,
)

from services.common.db import create_db_engine
from services.common.metrics import record_rate_limited, watch_circuits, watch_in_flight
from services.common.service_main import run_service, server_options, start_serving, wait_for_stop_signal
from services.common.settings import Settings
from services.common.telemetry import server_interceptors
from services.orchestrator.catalog import load_catalog
from services.orchestrator.conversations.service import ConversationsService
from services.orchestrator.conversations.store import ConversationStore
from services.orchestrator.edge_health import EdgeHealth
from services.orchestrator.embeddings import EmbeddingsEndpoint
from services.orchestrator.generate import Generator
from services.orchestrator.ingestion.files import FileStore
from services.orchestrator.ingestion.gateway import RetrievalGateway
from services.orchestrator.ingestion.native import CollectionsService
from services.orchestrator.ingestion.vector_stores import VectorStoresFacade
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.migrations import migrate
from services.orchestrator.native_chat import NativeChat
from services.orchestrator.openai_facade import OpenAIFacade, error_response
from services.orchestrator.pipeline.pipeline import ChatPipeline
from services.orchestrator.replicated_llm import ReplicatedLLM, triton_llm_for
from services.orchestrator.response_cache import ResponseCache
from services.orchestrator.routing import Router, load_routing_policy
from services.orchestrator.size_bound import PromptSizeBound
from services.orchestrator.stalled_streams import StalledStreamInterceptor
from services.orchestrator.tenancy.audit import AuditLog
from services.orchestrator.tenancy.auth import AuthInterceptor
from services.orchestrator.tenancy.limits import InProcessLimiter
from services.orchestrator.tenancy.metering import Metering
from services.orchestrator.tenancy.redis_limits import RedisLimiter
from services.orchestrator.tenancy.store import TenantStore
from services.orchestrator.tenancy.tiers import TierBook
from services.orchestrator.tenancy.usage import UsageLog
from services.orchestrator.tools.registry import builtin_registry
from services.orchestrator.tools.runner import ToolRunner
from services.orchestrator.triton_llm import TritonLLM
from services.retrieval.embedding_client import EmbeddingClient

log = logging.getLogger("sluice.orchestrator")

SERVICE_NAMES = (
    openai_pb2.DESCRIPTOR.services_by_name["OpenAI"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["Chat"].full_name,
    conversations_pb2.DESCRIPTOR.services_by_name["Conversations"].full_name,
    collections_pb2.DESCRIPTOR.services_by_name["Collections"].full_name,
    vector_stores_pb2.DESCRIPTOR.services_by_name["VectorStores"].full_name,
    edge_pb2.DESCRIPTOR.services_by_name["Edge"].full_name,
)


async def create_server(settings: Settings, address: str | None = None,
                        llm: TritonLLM | ReplicatedLLM | None = None,
                        ) -> tuple[grpc.aio.Server, int, TritonLLM | ReplicatedLLM]:
    """Builds and starts the server. `address` may use port 0 (tests); returns the bound port."""
    catalog = load_catalog(settings)
    llm = llm or triton_llm_for(settings)  # every Triton replica when SLUICE_TRITON_REPLICAS > 1
    router = Router(catalog, load_routing_policy(settings))
    watch_in_flight(lambda: {name: health.in_flight for name, health in router.health.items()})  # queue depth
    generator = Generator(catalog, llm, default_max_tokens=settings.max_tokens_default, router=router,
                          cache=ResponseCache(max_entries=settings.response_cache_entries,
                                              ttl_s=settings.response_cache_ttl_s))
    await asyncio.to_thread(migrate, settings.db_url)  # idempotent: an up-to-date database is left alone
    db = create_db_engine(settings.db_url)
    audit_log, usage = AuditLog(db), UsageLog(db)
    tenants = TenantStore(db, TierBook.load(settings.tiers_path))
    limiter = RedisLimiter(settings.redis_url) if settings.redis_url else InProcessLimiter()
    metering = Metering(limiter, usage, audit_log, on_rejected=record_rate_limited)
    auth = AuthInterceptor(tenants, audit_log, error_response, cache_ttl_s=settings.auth_cache_s)
    stalled = StalledStreamInterceptor(settings.stream_idle_timeout_s)  # ends streams the client stopped reading
    server = grpc.aio.server(interceptors=[stalled, *server_interceptors("orchestrator", settings), auth],
                             options=server_options(16 * 1024 * 1024))
    tools = ToolRunner(generator, builtin_registry(settings.retrieval_url))
    embeddings = EmbeddingsEndpoint(EmbeddingClient(settings.triton_grpc_urls))  # `embedder`, on any replica
    pipeline = ChatPipeline.from_settings(settings, catalog)  # the stages declared in pipelines/stages.yaml
    watch_circuits(lambda: {**{f"deployment:{name}": health.breaker.state.value
                               for name, health in router.health.items()},
                            **{f"stage:{stage.name}": stage.breaker.state.value for stage in pipeline.stages()}})
    lifecycle = RequestLifecycle(pipeline, PromptSizeBound.for_catalog(catalog))  # one order of work for every API
    openai_pb2_grpc.add_OpenAIServicer_to_server(
        OpenAIFacade(catalog, generator, tools, embeddings, pipeline, metering=metering, lifecycle=lifecycle,
                     conversations=ConversationStore(db)), server)
    chat_pb2_grpc.add_ChatServicer_to_server(NativeChat(generator, pipeline, metering=metering, lifecycle=lifecycle),
                                             server)
    conversations_pb2_grpc.add_ConversationsServicer_to_server(
        ConversationsService(ConversationStore(db), generator, metering=metering, lifecycle=lifecycle), server)
    gateway = RetrievalGateway(settings.retrieval_url)  # ingestion through the API, as the key's tenant
    collections_pb2_grpc.add_CollectionsServicer_to_server(CollectionsService(gateway), server)
    vector_stores_pb2_grpc.add_VectorStoresServicer_to_server(VectorStoresFacade(FileStore(db), gateway), server)
    stage_addresses = {spec.name: spec.address for spec in pipeline.config.stages if spec.address}
    edge_pb2_grpc.add_EdgeServicer_to_server(EdgeHealth(llm.is_ready, stage_addresses), server)
    port = await start_serving(server, address or f"{settings.host}:{settings.orchestrator_port}", SERVICE_NAMES,
                               "orchestrator")
    return server, port, llm


async def serve(settings: Settings, grace_seconds: float) -> None:
    server, port, llm = await create_server(settings)
    log.info("orchestrator listening on %s:%d", settings.host, port)
    await wait_for_stop_signal()
    log.info("shutting down: in-flight streams have %.0f s to finish", grace_seconds)
    await server.stop(grace_seconds)
    await llm.close()


def main() -> None:
    run_service("Sluice orchestrator", serve, default_grace=30.0,
                grace_help="seconds in-flight streams get at shutdown")


if __name__ == "__main__":
    main()
