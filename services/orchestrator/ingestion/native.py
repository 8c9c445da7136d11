"""sluice.v1.Collections: the native gRPC face of collections, for `sluice ingest` and gRPC clients (via Envoy)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from sluice.v1 import collections_pb2, collections_pb2_grpc, retrieval_pb2

from services.orchestrator.ingestion.gateway import RetrievalGateway
from services.orchestrator.pipeline.pipeline import tenant_of

T = TypeVar("T")
MAX_DOCUMENTS_PER_CALL = 256


async def _forward(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """The retrieval service's answer, or its status code and words passed on (a down service is UNAVAILABLE)."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            await context.abort(exc.code(), exc.details() or exc.code().name)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the retrieval service is unavailable; please retry")
    raise AssertionError("unreachable: abort raises")


class CollectionsService(collections_pb2_grpc.CollectionsServicer):
    def __init__(self, gateway: RetrievalGateway) -> None:
        self.gateway = gateway

    async def CreateCollection(self, request: retrieval_pb2.CreateCollectionRequest,
                               context: grpc.aio.ServicerContext) -> retrieval_pb2.Collection:
        return await _forward(context, self.gateway.create(tenant_of(context), request.name))

    async def ListCollections(self, request: retrieval_pb2.ListCollectionsRequest,
                              context: grpc.aio.ServicerContext) -> retrieval_pb2.ListCollectionsResponse:
        tenant = tenant_of(context)
        found = await _forward(context, self.gateway.list(tenant))
        return retrieval_pb2.ListCollectionsResponse(collections=found, tenant=tenant)

    async def GetCollection(self, request: retrieval_pb2.GetCollectionRequest,
                            context: grpc.aio.ServicerContext) -> retrieval_pb2.Collection:
        return await _forward(context, self.gateway.get(tenant_of(context), request.name))

    async def DeleteCollection(self, request: retrieval_pb2.DeleteCollectionRequest,
                               context: grpc.aio.ServicerContext) -> retrieval_pb2.DeleteCollectionResponse:
        return await _forward(context, self.gateway.delete(tenant_of(context), request.name))

    async def Ingest(self, request: collections_pb2.IngestRequest,
                     context: grpc.aio.ServicerContext) -> retrieval_pb2.IngestSummary:
        if len(request.documents) > MAX_DOCUMENTS_PER_CALL:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"at most {MAX_DOCUMENTS_PER_CALL} documents per Ingest call; send several batches")
        return await _forward(context, self.gateway.ingest(tenant_of(context), request.collection,
                                                           request.documents))

    async def Search(self, request: retrieval_pb2.SearchRequest,
                     context: grpc.aio.ServicerContext) -> retrieval_pb2.SearchResponse:
        return await _forward(context, self.gateway.search(tenant_of(context), request))
