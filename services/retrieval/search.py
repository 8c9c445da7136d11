"""Hybrid retrieval: a dense (embedding) ranking and a lexical (BM25) ranking of the same chunks, fused by reciprocal
rank fusion. RRF uses ranks only, so the two signals' incomparable scores never need calibrating."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from services.retrieval.embedding_client import EmbeddingClient
from services.retrieval.store import MilvusStore, StoredHit

RRF_K = 60  # the constant from Cormack et al. (2009); damps the head of each list


class Mode(Enum):
    HYBRID = 0
    DENSE = 1
    LEXICAL = 2


def reciprocal_rank_fusion(rankings: Sequence[Sequence[StoredHit]], k: int = RRF_K,
                           limit: int | None = None) -> list[StoredHit]:
    """score(chunk) = Σ over rankings of 1 / (k + rank), rank from 1. Ties keep first-seen order (stable)."""
    scores: dict[str, float] = {}
    first: dict[str, StoredHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
            first.setdefault(hit.chunk_id, hit)
    order = sorted(first, key=lambda cid: -scores[cid])  # sorted() is stable
    fused = [replace(first[cid], score=scores[cid]) for cid in order]
    return fused[:limit] if limit is not None else fused


@dataclass(slots=True)
class SearchResult:
    hits: list[StoredHit]
    embed_ms: float = 0.0
    search_ms: float = 0.0


class HybridSearcher:
    def __init__(self, store: MilvusStore, embedder: EmbeddingClient, candidates: int = 2) -> None:
        self.store = store
        self.embedder = embedder
        # Per signal, fetch `candidates` × k before fusion. Milvus Lite's search cost grows with the limit (pure-Python
        # result assembly: 5 → 30 hits took ~3× longer), so the fusion depth is kept small.
        self.candidates = candidates

    async def search(self, collection: str, tenant: str, query: str, k: int, mode: Mode = Mode.HYBRID,
                     document_ids: Sequence[str] = (), metadata: dict[str, str] | None = None) -> SearchResult:
        depth = max(k * self.candidates, 10) if mode is Mode.HYBRID else k
        timings = {"embed": 0.0, "search": 0.0}

        async def dense() -> list[StoredHit]:
            started = time.perf_counter()
            vector = (await self.embedder.embed([query])).vectors[0]
            timings["embed"] = (time.perf_counter() - started) * 1000
            return await self._timed(timings, self.store.dense_search, collection, tenant, vector, depth,
                                     document_ids, metadata)

        async def lexical() -> list[StoredHit]:
            return await self._timed(timings, self.store.lexical_search, collection, tenant, query, depth,
                                     document_ids, metadata)

        # The lexical search runs while the query is being embedded.
        signals = {Mode.HYBRID: (dense, lexical), Mode.DENSE: (dense,), Mode.LEXICAL: (lexical,)}[mode]
        rankings = await asyncio.gather(*(signal() for signal in signals))
        hits = reciprocal_rank_fusion(rankings, limit=k) if mode is Mode.HYBRID else rankings[0][:k]
        return SearchResult(hits, timings["embed"], timings["search"])

    @staticmethod
    async def _timed(timings: dict[str, float], fn, *args) -> list[StoredHit]:
        started = time.perf_counter()
        hits = await asyncio.to_thread(fn, *args)
        timings["search"] += (time.perf_counter() - started) * 1000
        return hits
