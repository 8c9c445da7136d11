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
from services.retrieval.search import HybridSearcher, Mode
from services.retrieval.store import InvalidRequest, MilvusStore

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


class RetrievalService(retrieval_pb2_grpc.RetrievalServicer):
    def __init__(self, store: MilvusStore, indexer: Indexer, searcher: HybridSearcher) -> None:
        self.store = store
        self.indexer = indexer
        self.searcher = searcher

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, InvalidRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
