"""The orchestrator's calls into the internal retrieval service for collections, always as the caller's tenant.

The tenant travels as `x-sluice-tenant` metadata, which only Sluice's own services set; it comes from the API key
the auth interceptor accepted, never from the request. Refusals by the retrieval service become OpenAI-shaped
ApiErrors (404 collection_not_found, 400 invalid collection name, 503 when it is down).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.errors import ApiError, invalid, unavailable

TENANT_HEADER = "x-sluice-tenant"
INGEST_TIMEOUT_S = 600.0
CALL_TIMEOUT_S = 30.0


def collection_not_found(message: str, param: str | None = None) -> ApiError:
    return ApiError(404, message, "invalid_request_error", param, "collection_not_found")


def api_error(exc: grpc.aio.AioRpcError, param: str | None = None) -> ApiError:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return collection_not_found(exc.details() or "collection not found", param)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid(exc.details() or "invalid request", param, "invalid_value")
    return unavailable("The retrieval service is unavailable; please retry.")


class RetrievalGateway:
    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> retrieval_pb2_grpc.RetrievalStub:
        if self._channel is None:  # created on first use, inside the server's event loop
            self._channel = grpc.aio.insecure_channel(
                self.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        return retrieval_pb2_grpc.RetrievalStub(self._channel)

    @staticmethod
    def _as(tenant: str) -> tuple[tuple[str, str], ...]:
        return ((TENANT_HEADER, tenant),)

    async def create(self, tenant: str, name: str) -> retrieval_pb2.Collection:
        return await self.stub.CreateCollection(retrieval_pb2.CreateCollectionRequest(name=name),
                                                metadata=self._as(tenant), timeout=CALL_TIMEOUT_S)

    async def get(self, tenant: str, name: str) -> retrieval_pb2.Collection:
        return await self.stub.GetCollection(retrieval_pb2.GetCollectionRequest(name=name),
                                             metadata=self._as(tenant), timeout=CALL_TIMEOUT_S)

    async def list(self, tenant: str) -> list[retrieval_pb2.Collection]:
        reply = await self.stub.ListCollections(retrieval_pb2.ListCollectionsRequest(), metadata=self._as(tenant),
                                                timeout=CALL_TIMEOUT_S)
        return list(reply.collections)

    async def delete(self, tenant: str, name: str) -> retrieval_pb2.DeleteCollectionResponse:
        return await self.stub.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name=name),
                                                metadata=self._as(tenant), timeout=CALL_TIMEOUT_S)

    async def ingest(self, tenant: str, collection: str,
                     documents: Sequence[retrieval_pb2.Document]) -> retrieval_pb2.IngestSummary:
        def stamped() -> list[retrieval_pb2.Document]:
            out = []
            for doc in documents:
                copy = retrieval_pb2.Document()
                copy.CopyFrom(doc)
                copy.collection = collection  # the request's collection, whatever a document says
                out.append(copy)
            return out

        return await self.stub.Ingest(iter(stamped()), metadata=self._as(tenant), timeout=INGEST_TIMEOUT_S)

    async def search(self, tenant: str, request: retrieval_pb2.SearchRequest) -> retrieval_pb2.SearchResponse:
        return await self.stub.Search(request, metadata=self._as(tenant), timeout=CALL_TIMEOUT_S)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
