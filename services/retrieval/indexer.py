"""Documents → chunks → embeddings → Milvus, idempotent by content hash.

An unchanged document (same text, metadata and chunker) costs one small query and nothing else: no chunking, no
embedding, no write. Documents are handled a group at a time so their chunks share embedding batches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum

from services.retrieval.chunking import ChunkingConfig, chunk_text
from services.retrieval.embedding_client import EmbeddingClient
from services.retrieval.store import ChunkRow, InvalidRequest, MilvusStore, content_hash

MAX_DOCUMENT_CHARS = 5_000_000


class Outcome(Enum):
    WRITTEN = 1
    REPLACED = 2
    UNCHANGED = 3


@dataclass(frozen=True, slots=True)
class SourceDocument:
    collection: str
    document_id: str
    text: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class IndexResult:
    document_id: str
    outcome: Outcome
    chunks: int


class Indexer:
    def __init__(self, store: MilvusStore, embedder: EmbeddingClient, config: ChunkingConfig | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or ChunkingConfig()
        self.version = f"v1:{self.config.max_tokens}:{self.config.overlap_tokens}"  # part of every content hash

    async def index(self, tenant: str, documents: list[SourceDocument]) -> list[IndexResult]:
        plans = []
        results: dict[int, IndexResult] = {}
        for n, doc in enumerate(documents):
            if not doc.document_id:
                raise InvalidRequest("every document needs an id")
            if len(doc.text) > MAX_DOCUMENT_CHARS:
                raise InvalidRequest(f"document {doc.document_id!r} is over {MAX_DOCUMENT_CHARS} characters")
            digest = content_hash(doc.text, doc.metadata, self.version)
            existing = await asyncio.to_thread(self.store.document_hashes, doc.collection, tenant, doc.document_id)
            if existing == {digest}:
                results[n] = IndexResult(doc.document_id, Outcome.UNCHANGED, 0)
                continue
            chunks = await asyncio.to_thread(chunk_text, doc.text, self.config)
            plans.append((n, doc, digest, chunks, Outcome.REPLACED if existing else Outcome.WRITTEN))
        texts = [c.text for _, _, _, chunks, _ in plans for c in chunks]
        vectors = (await self.embedder.embed(texts)).vectors
        offset = 0
        for n, doc, digest, chunks, outcome in plans:
            rows = [ChunkRow(f"{doc.document_id}#{c.index}", doc.document_id, c.index, c.text, vectors[offset + i])
                    for i, c in enumerate(chunks)]
            offset += len(chunks)
            await asyncio.to_thread(self.store.replace_document, doc.collection, tenant, doc.document_id, digest,
                                    rows, doc.metadata)
            results[n] = IndexResult(doc.document_id, outcome, len(rows))
        return [results[n] for n in range(len(documents))]
