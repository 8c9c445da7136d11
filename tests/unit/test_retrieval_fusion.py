"""Reciprocal rank fusion, dense re-scoring over packed vectors, and the store's filter builder (the tenant clause
is always first and always there)."""

from __future__ import annotations

import numpy as np
import pytest

from services.retrieval.embedding_model import DIMENSIONS
from services.retrieval.search import RRF_K, reciprocal_rank_fusion, rescore_dense
from services.retrieval.store import (
    MAX_PACKED_CHARS,
    MAX_PACKED_VECTORS,
    InvalidRequest,
    StoredHit,
    build_filter,
    pack_vectors,
    physical_name,
    unpack_vectors,
)


def hits(*ids: str) -> list[StoredHit]:
    return [StoredHit(chunk_id=i, document_id=i.split("#")[0], text=i, score=1.0) for i in ids]


def test_rrf_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion([hits("a", "b", "c"), hits("c", "a", "d")])
    assert [h.chunk_id for h in fused] == ["a", "c", "b", "d"]
    assert fused[0].score == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 2))
    assert fused[2].score == pytest.approx(1 / (RRF_K + 2))


def test_rrf_agreement_beats_a_single_first_place_and_limit_cuts() -> None:
    fused = reciprocal_rank_fusion([hits("solo", "both"), hits("x", "both")], limit=2)
    assert [h.chunk_id for h in fused] == ["both", "solo"]


def test_rrf_ties_keep_first_seen_order_and_empty_inputs_fuse_to_nothing() -> None:
    assert [h.chunk_id for h in reciprocal_rank_fusion([hits("a"), hits("b")])] == ["a", "b"]
    assert reciprocal_rank_fusion([[], []]) == []


def test_filters_always_start_with_the_tenant_and_quote_every_value() -> None:
    expression = build_filter("acme", ["d\"1"], {"lang": 'en" or tenant_id != "x'})
    assert expression.startswith('tenant_id == "acme" and ')
    assert 'document_id in ["d\\"1"]' in expression
    assert 'metadata["lang"] == "en\\" or tenant_id != \\"x"' in expression


def test_filters_refuse_bad_keys_and_a_missing_tenant_and_bad_collection_names() -> None:
    with pytest.raises(InvalidRequest):
        build_filter("acme", metadata={"a] or 1==1 or metadata[b": "x"})
    with pytest.raises(InvalidRequest):
        build_filter("")
    with pytest.raises(InvalidRequest):
        physical_name("no-dashes; drop")
    assert physical_name("docs_v2") == "sluice_docs_v2"


def test_weighted_rrf_lets_the_stronger_signal_lead_and_needs_one_weight_per_ranking() -> None:
    dense, lexical = hits("d", "p", "q", "r", "x"), hits("x", "l")
    assert [h.chunk_id for h in reciprocal_rank_fusion([dense, lexical], k=5)][:2] == ["x", "d"]
    fused = reciprocal_rank_fusion([dense, lexical], k=5, weights=(3.0, 1.0))
    assert [h.chunk_id for h in fused][:2] == ["d", "x"]
    assert fused[0].score == pytest.approx(3 / 6) and fused[1].score == pytest.approx(3 / 10 + 1 / 6)
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([hits("a")], weights=(1.0, 2.0))


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIMENSIONS, np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def test_dense_rescoring_uses_the_best_packed_vector_and_falls_back_to_the_chunk_score() -> None:
    query = unit(1.0)
    window_match = StoredHit("a", "a", "a", 0.1, vectors=np.stack([unit(0.0, 1.0), unit(1.0)]))
    chunk_only = StoredHit("b", "b", "b", 0.2, vectors=unit(0.8, 0.6)[None])
    old_row = StoredHit("c", "c", "c", 0.9)  # a collection without packed vectors: Milvus' dense score is kept
    lexical_only = StoredHit("d", "d", "d", 7.5)  # no vectors and no dense score: last
    ranked = rescore_dense(query, [lexical_only, chunk_only, old_row, window_match], {"c": 0.9})
    assert [h.chunk_id for h in ranked] == ["a", "c", "b", "d"]
    assert ranked[0].score == pytest.approx(1.0) and ranked[2].score == pytest.approx(0.8)
    assert ranked[3].score == float("-inf")


def test_packed_vectors_round_trip_in_float16_and_are_bounded() -> None:
    chunk, windows = unit(1.0, 2.0), np.stack([unit(3.0, 1.0), unit(0.0, 0.0, 1.0)])
    packed = pack_vectors(chunk, windows)
    assert len(packed) <= MAX_PACKED_CHARS
    restored = unpack_vectors(packed)
    assert restored.shape == (3, DIMENSIONS) and np.allclose(restored[0], chunk, atol=1e-3)
    assert np.allclose(restored[1:], windows, atol=1e-3)
    assert unpack_vectors(pack_vectors(chunk, None)).shape == (1, DIMENSIONS)
    with pytest.raises(InvalidRequest):
        pack_vectors(chunk, np.stack([chunk] * MAX_PACKED_VECTORS))
