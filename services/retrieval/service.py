"""The Retrieval gRPC servicer: tenancy from call metadata, typed errors to gRPC status codes."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import grpc
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.metrics import record_retrieval
from services.retrieval.embedding_client import EmbedderUnavailable
from services.retrieval.indexer import Indexer, Outcome, SourceDocument
from services.retrieval.registry import CollectionRegistry, Registered
from services.retrieval.search import HybridSearcher, Mode
from services.retrieval.store import InvalidRequest, MilvusStore, build_filter, physical_name

log = logging.getLogger(__name__)

TENANT_HEADER = "x-sluice-tenant"
DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
INGEST_GROUP = 16  # documents whose chunks share one round of embedding
MAX_K = 100
_OUTCOMES = {Outcome.WRITTEN: retrieval_pb2.DocumentResult.WRITTEN,
             Outcome.REPLACED: retrieval_pb2.DocumentResult.REPLACED,
             Outcome.UNCHANGED: retrieval_pb2.DocumentResult.UNCHANGED}


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's tenant, from metadata the orchestrator sets after authenticating (a direct caller without it is
    the default tenant). Callers never pass a tenant in a request body."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_HEADER:
            if not _TENANT.match(value):
                raise InvalidRequest(f"invalid tenant id in {TENANT_HEADER}")
            return value
    return DEFAULT_TENANT


class CollectionNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"The collection {name!r} does not exist for your tenant (create it, or ingest into it "
                         "with `sluice ingest PATH --collection NAME`; `sluice collections list` shows yours).")


class RetrievalService(retrieval_pb2_grpc.RetrievalServicer):
    def __init__(self, store: MilvusStore, indexer: Indexer, searcher: HybridSearcher,
                 registry: CollectionRegistry | None = None) -> None:
        self.store = store
        self.indexer = indexer
        self.searcher = searcher
        self.registry = registry or CollectionRegistry(store.client)

    async def _registered(self, tenant: str, name: str) -> Registered:
        """The tenant's collection, or CollectionNotFound. Chunks written before the registry existed count."""
        physical_name(name)  # a malformed name is INVALID_ARGUMENT, not NOT_FOUND
        found = await asyncio.to_thread(self.registry.get, tenant, name)
        if found is None and await asyncio.to_thread(self.store.count, name, tenant) > 0:
            found = await asyncio.to_thread(self.registry.add, tenant, name)
        if found is None:
            raise CollectionNotFound(name)
        return found

    async def _describe(self, tenant: str, entry: Registered) -> retrieval_pb2.Collection:
        chunks = await asyncio.to_thread(self.store.count, entry.name, tenant)
        documents = await asyncio.to_thread(self.store.count, entry.name, tenant, True) if chunks else 0
        return retrieval_pb2.Collection(name=entry.name, created_at=entry.created_at, chunks=chunks,
                                        documents=documents)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, InvalidRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if isinstance(exc, CollectionNotFound):
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if isinstance(exc, EmbedderUnavailable):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        log.exception("retrieval call failed")
        await context.abort(grpc.StatusCode.INTERNAL, "retrieval failed")

    async def Ingest(self, request_iterator: AsyncIterator[retrieval_pb2.Document],
                     context: grpc.aio.ServicerContext) -> retrieval_pb2.IngestSummary:
        started = time.perf_counter()
        summary = retrieval_pb2.IngestSummary()
        try:
            tenant = tenant_of(context)
            group: list[SourceDocument] = []
            written: set[str] = set()
            registered: set[tuple[str, str]] = set()

            async def flush() -> None:
                written.update(doc.collection for doc in group)
                for result in await self.indexer.index(tenant, group):
                    summary.results.add(document_id=result.document_id, outcome=_OUTCOMES[result.outcome],
                                        chunks=result.chunks)
                    if result.outcome is Outcome.UNCHANGED:
                        summary.unchanged += 1
                    else:
                        summary.written += 1
                        summary.chunks += result.chunks
                group.clear()

            async for doc in request_iterator:
                summary.documents += 1
                if (tenant, doc.collection) not in registered:  # named by an ingest: the tenant has it now
                    physical_name(doc.collection)
                    await asyncio.to_thread(self.registry.add, tenant, doc.collection)
                    registered.add((tenant, doc.collection))
                group.append(SourceDocument(doc.collection, doc.id, doc.text, dict(doc.metadata)))
                if len(group) >= INGEST_GROUP:
                    await flush()
            if group:
                await flush()
            for collection in sorted(written) if summary.written else ():
                await asyncio.to_thread(self.store.flush, collection)
        except Exception as exc:
            await self._fail(context, exc)
        summary.seconds = time.perf_counter() - started
        summary.tenant = tenant
        log.info("ingest: %d documents, %d written, %d unchanged, %d chunks in %.2f s", summary.documents,
                 summary.written, summary.unchanged, summary.chunks, summary.seconds)
        return summary

    async def Search(self, request: retrieval_pb2.SearchRequest,
                     context: grpc.aio.ServicerContext) -> retrieval_pb2.SearchResponse:
        try:
            tenant = tenant_of(context)
            if not request.query.strip():
                raise InvalidRequest("query must not be empty")
            k = request.k or 5
            if not 1 <= k <= MAX_K:
                raise InvalidRequest(f"k must be in [1, {MAX_K}]")
            build_filter(tenant, list(request.document_ids), dict(request.filter))  # bad input before lookups
            await self._registered(tenant, request.collection)
            started = time.perf_counter()
            result = await self.searcher.search(request.collection, tenant, request.query, k, Mode(request.mode),
                                                list(request.document_ids), dict(request.filter))
        except Exception as exc:
            await self._fail(context, exc)
        record_retrieval(result.embed_ms / 1000, result.search_ms / 1000, time.perf_counter() - started)
        response = retrieval_pb2.SearchResponse(embed_ms=result.embed_ms, search_ms=result.search_ms)
        for hit in result.hits:
            response.hits.add(chunk_id=hit.chunk_id, document_id=hit.document_id, text=hit.text, score=hit.score,
                              metadata=hit.metadata)
        return response

    async def Delete(self, request: retrieval_pb2.DeleteRequest,
                     context: grpc.aio.ServicerContext) -> retrieval_pb2.DeleteResponse:
        try:
            deleted = await asyncio.to_thread(self.store.delete, request.collection, tenant_of(context),
                                              list(request.document_ids), dict(request.filter))
            if deleted:
                await asyncio.to_thread(self.store.flush, request.collection)
        except Exception as exc:
            await self._fail(context, exc)
        return retrieval_pb2.DeleteResponse(chunks_deleted=deleted)

    async def CreateCollection(self, request: retrieval_pb2.CreateCollectionRequest,
                               context: grpc.aio.ServicerContext) -> retrieval_pb2.Collection:
        try:
            tenant = tenant_of(context)
            physical_name(request.name)
            entry = await asyncio.to_thread(self.registry.add, tenant, request.name)
            return await self._describe(tenant, entry)
        except Exception as exc:
            await self._fail(context, exc)

    async def ListCollections(self, request: retrieval_pb2.ListCollectionsRequest,
                              context: grpc.aio.ServicerContext) -> retrieval_pb2.ListCollectionsResponse:
        try:
            tenant = tenant_of(context)
            entries = await asyncio.to_thread(self.registry.list, tenant)
            return retrieval_pb2.ListCollectionsResponse(
                collections=[await self._describe(tenant, entry) for entry in entries], tenant=tenant)
        except Exception as exc:
            await self._fail(context, exc)

    async def GetCollection(self, request: retrieval_pb2.GetCollectionRequest,
                            context: grpc.aio.ServicerContext) -> retrieval_pb2.Collection:
        try:
            tenant = tenant_of(context)
            return await self._describe(tenant, await self._registered(tenant, request.name))
        except Exception as exc:
            await self._fail(context, exc)

    async def DeleteCollection(self, request: retrieval_pb2.DeleteCollectionRequest,
                               context: grpc.aio.ServicerContext) -> retrieval_pb2.DeleteCollectionResponse:
        try:
            tenant = tenant_of(context)
            await self._registered(tenant, request.name)
            deleted = await asyncio.to_thread(self.store.delete_tenant_rows, request.name, tenant)
            await asyncio.to_thread(self.registry.remove, tenant, request.name)
        except Exception as exc:
            await self._fail(context, exc)
        log.info("collection deleted: %d chunks", deleted)
        return retrieval_pb2.DeleteCollectionResponse(name=request.name, chunks_deleted=deleted)
