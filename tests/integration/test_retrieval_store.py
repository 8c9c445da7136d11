"""The Milvus store and the indexer on a real Milvus Lite file, with embeddings from the stack's real Triton embedder:
idempotent re-ingest, replacement of a changed document's chunks, deletes, and tenant isolation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.common.settings import Settings
from services.retrieval.chunking import ChunkingConfig
from services.retrieval.embedding_client import EmbeddingClient, Embeddings
from services.retrieval.indexer import Indexer, Outcome, SourceDocument
from services.retrieval.search import HybridSearcher, Mode
from services.retrieval.store import MilvusStore

COLLECTION = "store_test"
LONG = "\n\n".join(f"## Part {i}\n\nThe pump model P{i} moves {i * 10} litres per minute." for i in range(4))


class CountingEmbedder(EmbeddingClient):
    """The real Triton client, counting the texts it is asked to embed."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.texts = 0

    async def embed(self, texts: list[str]) -> Embeddings:
        self.texts += len(texts)
        return await super().embed(texts)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MilvusStore:
    store = MilvusStore(str(tmp_path_factory.mktemp("milvus") / "milvus.db"))
    yield store
    store.close()


def run(stack: Settings, store: MilvusStore, tenant: str, docs: list[SourceDocument]):
    async def go():
        embedder = CountingEmbedder(stack.triton_grpc_url)
        try:
            results = await Indexer(store, embedder, ChunkingConfig(64, 8)).index(tenant, docs)
            return results, embedder.texts
        finally:
            await embedder.close()
    return asyncio.run(go())


def search(stack: Settings, store: MilvusStore, tenant: str, query: str, mode: Mode = Mode.HYBRID, **kw):
    async def go():
        embedder = EmbeddingClient(stack.triton_grpc_url)
        try:
            return (await HybridSearcher(store, embedder).search(COLLECTION, tenant, query, 5, mode, **kw)).hits
        finally:
            await embedder.close()
    return asyncio.run(go())


def doc(doc_id: str, text: str, **metadata: str) -> SourceDocument:
    return SourceDocument(COLLECTION, doc_id, text, dict(metadata))


def test_reingesting_an_unchanged_document_embeds_and_writes_nothing(stack: Settings, store: MilvusStore) -> None:
    results, embedded = run(stack, store, "t-idem", [doc("pumps.md", LONG, lang="en")])
    assert results[0].outcome is Outcome.WRITTEN and results[0].chunks == 4 and embedded == 4
    pks_before = {r["pk"] for r in store.client.query("sluice_" + COLLECTION, filter='tenant_id == "t-idem"',
                                                      output_fields=["pk"])}
    results, embedded = run(stack, store, "t-idem", [doc("pumps.md", LONG, lang="en")])
    assert results[0].outcome is Outcome.UNCHANGED and embedded == 0
    pks_after = {r["pk"] for r in store.client.query("sluice_" + COLLECTION, filter='tenant_id == "t-idem"',
                                                     output_fields=["pk"])}
    assert pks_after == pks_before and len(pks_after) == 4


def test_a_changed_document_replaces_all_its_chunks(stack: Settings, store: MilvusStore) -> None:
    run(stack, store, "t-change", [doc("a.md", LONG), doc("b.md", "Unrelated note about kettles.")])
    results, _ = run(stack, store, "t-change", [doc("a.md", "The pump was discontinued in 2020.")])
    assert results[0].outcome is Outcome.REPLACED and results[0].chunks == 1
    assert store.count(COLLECTION, "t-change") == 2  # one new chunk of a.md + b.md
    texts = [h.text for h in search(stack, store, "t-change", "litres per minute pump", Mode.LEXICAL)]
    assert not any("litres" in t for t in texts)
    assert store.document_hashes(COLLECTION, "t-change", "a.md").__len__() == 1


def test_delete_by_document_id_and_by_metadata(stack: Settings, store: MilvusStore) -> None:
    run(stack, store, "t-del", [doc("x.md", LONG, team="red"), doc("y.md", "Yet another note.", team="blue"),
                                doc("z.md", "Zebra crossing rules.", team="blue")])
    assert store.delete(COLLECTION, "t-del", document_ids=["x.md"]) == 4
    assert store.delete(COLLECTION, "t-del", document_ids=["x.md"]) == 0
    assert store.delete(COLLECTION, "t-del", metadata={"team": "blue"}) == 2
    assert store.count(COLLECTION, "t-del") == 0


def test_tenant_b_never_sees_or_deletes_tenant_a_chunks(stack: Settings, store: MilvusStore) -> None:
    run(stack, store, "tenant-a", [doc("secret.md", "The launch code for project Nightjar is 4417.")])
    for mode in Mode:
        assert [h.document_id for h in search(stack, store, "tenant-a", "Nightjar launch code", mode)] == ["secret.md"]
        assert search(stack, store, "tenant-b", "Nightjar launch code", mode) == []
        assert search(stack, store, "tenant-b", "Nightjar", mode, document_ids=["secret.md"]) == []
    assert store.delete(COLLECTION, "tenant-b", document_ids=["secret.md"]) == 0
    assert store.document_hashes(COLLECTION, "tenant-b", "secret.md") == set()
    assert store.count(COLLECTION, "tenant-a") == 1


def test_dense_scores_are_cosine_similarities(stack: Settings, store: MilvusStore, tmp_path: Path) -> None:
    hits = search(stack, store, "tenant-a", "What is the launch code of Nightjar?", Mode.DENSE)
    assert 0.3 < hits[0].score <= 1.0001
    assert np.isfinite(hits[0].score)


def test_chunks_are_embedded_whole_and_per_sentence_and_scored_by_their_best_vector(stack: Settings,
                                                                                    store: MilvusStore) -> None:
    text = ("# Boiler room\n\nThe boiler room is in the basement. The blue valve controls the hot water. "
            "Visitors must sign in at the front desk.")
    results, embedded = run(stack, store, "t-windows", [doc("boiler.md", text)])
    assert results[0].chunks == 1 and embedded == 1 + 3  # the chunk and its three sentences
    query = "Which valve controls the hot water?"
    [hit] = store.dense_search(COLLECTION, "t-windows", embed(stack, [query])[0], 1)
    assert hit.vectors is not None and hit.vectors.shape == (4, 384)
    chunk_vector, sentence_vectors = embed(stack, [hit.text]), embed(stack, [f"Boiler room\n\n{s}" for s in (
        "The boiler room is in the basement.", "The blue valve controls the hot water.",
        "Visitors must sign in at the front desk.")])
    assert np.allclose(hit.vectors, np.vstack([chunk_vector, sentence_vectors]), atol=2e-3)  # float16 packing
    [dense] = search(stack, store, "t-windows", query, Mode.DENSE)
    cosines = hit.vectors @ embed(stack, [query])[0]
    assert dense.score == pytest.approx(cosines.max(), abs=1e-5) and cosines.argmax() == 2  # the valve sentence
    assert cosines.max() > cosines[0] + 0.05  # it beats the whole-chunk vector by a margin


def embed(stack: Settings, texts: list[str]) -> np.ndarray:
    async def go():
        client = EmbeddingClient(stack.triton_grpc_url)
        try:
            return (await client.embed(texts)).vectors
        finally:
            await client.close()
    return asyncio.run(go())
