"""Hybrid retrieval: a dense (embedding) ranking and a lexical (BM25) ranking of the same chunks, fused by weighted
reciprocal rank fusion. RRF uses ranks only, so the two signals' incomparable scores never need calibrating.

The dense ranking is two-stage. Milvus finds candidates by the whole-chunk vector; each candidate is then scored by
its best vector — the whole chunk or one of its sentence windows (packed in the row, so no second round trip) —
because one mean-pooled vector blurs a detail that a single sentence states. In hybrid mode the lexical candidates
are scored the same way, so a chunk that BM25 found and the chunk vector missed still gets a fair dense rank.

The fusion settings were chosen on the `tune` questions of tests/data/retrieval_eval (best recall@5 + MRR over
k {1, 5, 10, 20, 60} and dense weight {1, 1.5, 2, 3}, then the smallest pool of {10, 20, 30, 40, 50} that kept that
score) and are reported on its held-out `test` questions (`sluice eval retrieval`). Re-checked after the move to Milvus
Lite 2.5 (a different BM25): every setting near the top reaches tune recall@5 0.896 — the questions still missed name
two paraphrased attributes ("off-white fired clay" for "ivory brick") and neither signal ranks them — so they stay.
A larger pool also lifts dense-only recall (it re-scores more candidates) and erases hybrid's lead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from services.common.telemetry import client_span
from services.retrieval.embedding_client import EmbeddingClient
from services.retrieval.store import MilvusStore, StoredHit

RRF_K = 60  # the constant from Cormack et al. (2009); damps the head of each list


class Mode(Enum):
    HYBRID = 0
    DENSE = 1
    LEXICAL = 2


@dataclass(frozen=True, slots=True)
class FusionConfig:
    # Candidates fetched per signal before re-scoring and fusion (each returns its row with packed vectors).
    pool: int = 30
    rrf_k: int = 5  # a small k trusts the head of each list more than the classic 60
    dense_weight: float = 3.0  # BM25 ties on paraphrased questions (same few matching words): dense must lead
    lexical_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.pool < 1 or self.rrf_k < 0 or self.dense_weight < 0 or self.lexical_weight < 0:
            raise ValueError(f"invalid fusion config {self}")


def reciprocal_rank_fusion(rankings: Sequence[Sequence[StoredHit]], k: int = RRF_K, limit: int | None = None,
                           weights: Sequence[float] | None = None) -> list[StoredHit]:
    """score(chunk) = Σ over rankings of weight / (k + rank), rank from 1. Ties keep first-seen order (stable)."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[str, float] = {}
    first: dict[str, StoredHit] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (k + rank)
            first.setdefault(hit.chunk_id, hit)
    order = sorted(first, key=lambda cid: -scores[cid])  # sorted() is stable
    fused = [replace(first[cid], score=scores[cid]) for cid in order]
    return fused[:limit] if limit is not None else fused


def rescore_dense(query: np.ndarray, hits: Sequence[StoredHit], dense_scores: dict[str, float]) -> list[StoredHit]:
    """Candidates ordered by their best cosine over their packed vectors (whole chunk, sentence windows). A hit without
    packed vectors (a collection from before they existed) keeps the score Milvus gave its chunk vector
    (`dense_scores`), or ranks last when only BM25 found it."""
    scored = [replace(hit, score=float((hit.vectors @ query).max()) if hit.vectors is not None
                      else dense_scores.get(hit.chunk_id, float("-inf"))) for hit in hits]
    return sorted(scored, key=lambda h: -h.score)


@dataclass(slots=True)
class SearchResult:
    hits: list[StoredHit]
    embed_ms: float = 0.0
    search_ms: float = 0.0


class HybridSearcher:
    def __init__(self, store: MilvusStore, embedder: EmbeddingClient, fusion: FusionConfig | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.fusion = fusion or FusionConfig()

    async def search(self, collection: str, tenant: str, query: str, k: int, mode: Mode = Mode.HYBRID,
                     document_ids: Sequence[str] = (), metadata: dict[str, str] | None = None) -> SearchResult:
        pool = max(self.fusion.pool, k)
        timings = {"embed": 0.0, "search": 0.0}
        vector: list[np.ndarray] = []

        async def dense() -> list[StoredHit]:
            started = time.perf_counter()
            vector.append((await self.embedder.embed([query])).vectors[0])
            timings["embed"] = (time.perf_counter() - started) * 1000
            return await self._timed(timings, self.store.dense_search, collection, tenant, vector[0], pool,
                                     document_ids, metadata)

        async def lexical(limit: int) -> list[StoredHit]:
            return await self._timed(timings, self.store.lexical_search, collection, tenant, query, limit,
                                     document_ids, metadata)

        if mode is Mode.LEXICAL:
            hits = (await lexical(k))[:k]
        elif mode is Mode.DENSE:
            candidates = await dense()
            hits = rescore_dense(vector[0], candidates, {h.chunk_id: h.score for h in candidates})[:k]
        else:  # the lexical search runs while the query is being embedded
            dense_hits, lexical_hits = await asyncio.gather(dense(), lexical(pool))
            union = list({h.chunk_id: h for h in [*lexical_hits, *dense_hits]}.values())
            dense_ranking = rescore_dense(vector[0], union, {h.chunk_id: h.score for h in dense_hits})
            hits = reciprocal_rank_fusion([dense_ranking, lexical_hits], self.fusion.rrf_k, k,
                                          (self.fusion.dense_weight, self.fusion.lexical_weight))
        return SearchResult(hits, timings["embed"], timings["search"])

    @staticmethod
    async def _timed(timings: dict[str, float], fn: Callable[..., list[StoredHit]], *args) -> list[StoredHit]:
        started = time.perf_counter()
        with client_span(f"milvus {fn.__name__}", {"db.system.name": "milvus", "db.operation.name": fn.__name__,
                                                  "db.collection.name": str(args[0])}) as span:
            hits = await asyncio.to_thread(fn, *args)
            span.set_attribute("db.response.returned_rows", len(hits))
        timings["search"] += (time.perf_counter() - started) * 1000
        return hits
