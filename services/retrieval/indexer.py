"""Documents → chunks → embeddings → Milvus, idempotent by content hash.

An unchanged document (same text, metadata and chunker) costs one small query and nothing else: no chunking, no
embedding, no write. Documents are handled a group at a time so their chunks share embedding batches. Each chunk is
embedded whole and per sentence window; the windows together are about as many tokens as the chunk, so this roughly
doubles the embedding work of an ingest.
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
        # Part of every content hash: a new chunker (v2 added sentence windows) re-indexes documents on next ingest.
        self.version = f"v2:{self.config.max_tokens}:{self.config.overlap_tokens}"

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
        texts = [t for _, _, _, chunks, _ in plans for c in chunks for t in (c.text, *c.windows)]
        vectors = (await self.embedder.embed(texts)).vectors
        offset = 0
        for n, doc, digest, chunks, outcome in plans:
            rows = []
            for c in chunks:
                windows = vectors[offset + 1:offset + 1 + len(c.windows)] if c.windows else None
                rows.append(ChunkRow(f"{doc.document_id}#{c.index}", doc.document_id, c.index, c.text,
                                     vectors[offset], windows))
                offset += 1 + len(c.windows)
            await asyncio.to_thread(self.store.replace_document, doc.collection, tenant, doc.document_id, digest,
                                    rows, doc.metadata)
            results[n] = IndexResult(doc.document_id, outcome, len(rows))
        return [results[n] for n in range(len(documents))]
