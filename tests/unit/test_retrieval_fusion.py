"""Reciprocal rank fusion and the store's filter builder (the tenant clause is always first and always there)."""

from __future__ import annotations

import pytest

from services.retrieval.search import RRF_K, reciprocal_rank_fusion
from services.retrieval.store import InvalidRequest, StoredHit, build_filter, physical_name


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
