"""The retrieval benchmark's fill on a real Milvus Lite file: the synthetic collection has the size asked for, every
row carries packed vectors like an ingested chunk, and the generated questions find their documents by BM25."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.bench.retrieval_bench import COLLECTION, TENANT, facts, fill
from services.retrieval.embedding_model import DIMENSIONS
from services.retrieval.store import MilvusStore


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIMENSIONS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_fill_writes_searchable_chunks_with_noisy_copies_of_the_base_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = [(unit_rows(rng, 1)[0], unit_rows(rng, 3)) for _ in range(4)]
    store = MilvusStore(str(tmp_path / "milvus.db"))
    try:
        questions, seconds = fill(store, 300, base, seed=13, batch=128)
        assert store.count(COLLECTION, TENANT) == 300 and seconds > 0
        assert questions[0] == next(facts(13)).question and len(questions) == 300
        [hit] = store.dense_search(COLLECTION, TENANT, base[1][0], 1)
        assert hit.vectors is not None and hit.vectors.shape == (4, DIMENSIONS)
        assert hit.score > 0.98  # a noisy copy of base vector 1 (σ = 0.01 per dimension)
        first = next(facts(13))
        assert store.lexical_search(COLLECTION, TENANT, first.name, 1)[0].document_id == "doc0.md"
    finally:
        store.close()
