"""The retrieval service in the running stack: `sluice ingest` of a folder through the API (as the key's tenant),
search through gRPC, re-ingest skips unchanged files, tenants are isolated on every method (another tenant's
collection is NOT_FOUND, not an empty answer), and a small slice of the evaluation corpus is answered."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.cli.ingest import ingest
from services.common.settings import Settings
from services.retrieval.evaluation import evaluate, ingest_corpus, load

A = (("x-sluice-tenant", "tenant-a"),)
B = (("x-sluice-tenant", "tenant-b"),)


@pytest.fixture(scope="module")
def retrieval(stack: Settings) -> retrieval_pb2_grpc.RetrievalStub:
    with grpc.insecure_channel(stack.retrieval_url) as channel:
        yield retrieval_pb2_grpc.RetrievalStub(channel)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "guides").mkdir()
    (root / "guides" / "kettle.md").write_text("# Kettle manual\n\n## Descaling\n\nDescale the Aurora kettle every "
                                               "six weeks with citric acid.\n\n## Warranty\n\nTwo years.")
    (root / "faq.html").write_text("<h1>FAQ</h1><p>The Borealis toaster has <b>seven</b> browning levels.</p>")
    (root / "notes.txt").write_text("Office plants are watered on Thursdays.")
    return root


def test_ingest_cli_then_search_finds_the_answering_document(stack: Settings, folder: Path, tenant_keys,
                                                             retrieval, capsys: pytest.CaptureFixture) -> None:
    key = tenant_keys("tenant-cli", "enterprise")
    assert ingest([str(folder)], "manuals", api_key=key, settings=stack) == 0
    out = capsys.readouterr()
    assert "3 documents" in out.out and "3 written" in out.out and "0 skipped unchanged" in out.out
    assert "collection 'manuals' of tenant 'tenant-cli'" in out.out  # the key's tenant, said out loud
    cli = (("x-sluice-tenant", "tenant-cli"),)
    with pytest.raises(grpc.RpcError) as caught:  # nothing went to the default tenant
        retrieval.Search(retrieval_pb2.SearchRequest(query="kettle", collection="manuals", k=3))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    reply = retrieval.Search(retrieval_pb2.SearchRequest(query="How often should I descale the kettle?",
                                                         collection="manuals", k=3), metadata=cli)
    assert reply.hits[0].document_id == "guides/kettle.md"
    assert reply.hits[0].chunk_id.startswith("guides/kettle.md#")
    assert "citric acid" in reply.hits[0].text and reply.hits[0].metadata["type"] == "md"
    html_hit = retrieval.Search(retrieval_pb2.SearchRequest(query="toaster browning levels", collection="manuals",
                                                            k=1, filter={"type": "html"}), metadata=cli)
    assert [h.document_id for h in html_hit.hits] == ["faq.html"]
    # Resumable and idempotent: a second run writes nothing.
    assert ingest([str(folder)], "manuals", api_key=key, settings=stack) == 0
    assert "0 written" in capsys.readouterr().out


def test_ingest_cli_refuses_a_bad_key_and_a_bad_name_in_words(stack: Settings, folder: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    assert ingest([str(folder)], "manuals", api_key="sk-sluice-nope", settings=stack) == 1
    err = capsys.readouterr().err
    assert "API key was refused" in err and "UNAUTHENTICATED" not in err and "resume" not in err
    assert ingest([str(folder)], "no spaces", api_key="sk-sluice-nope", settings=stack) == 2
    assert "invalid collection name 'no spaces'" in capsys.readouterr().err


def test_collections_with_dashes_and_dots_are_listed_and_deleted_per_tenant(retrieval) -> None:
    for name in ("my-docs", "v1.2_notes"):
        summary = retrieval.Ingest(iter([retrieval_pb2.Document(id="a.md", collection=name, text=f"About {name}.")]),
                                   metadata=A)
        assert summary.written == 1 and summary.tenant == "tenant-a"
    created = retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="empty.one"), metadata=A)
    assert (created.name, created.chunks, created.documents) == ("empty.one", 0, 0)
    listed = {c.name: (c.documents, c.chunks) for c in retrieval.ListCollections(
        retrieval_pb2.ListCollectionsRequest(), metadata=A).collections}
    assert listed["my-docs"] == (1, 1) and listed["v1.2_notes"] == (1, 1) and listed["empty.one"] == (0, 0)
    assert "my-docs" not in {c.name for c in retrieval.ListCollections(retrieval_pb2.ListCollectionsRequest(),
                                                                       metadata=B).collections}
    with pytest.raises(grpc.RpcError) as caught:  # tenant B cannot delete A's collection
        retrieval.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name="my-docs"), metadata=B)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    deleted = retrieval.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name="my-docs"), metadata=A)
    assert deleted.chunks_deleted == 1
    with pytest.raises(grpc.RpcError) as caught:
        retrieval.Search(retrieval_pb2.SearchRequest(query="About", collection="my-docs"), metadata=A)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    hits = retrieval.Search(retrieval_pb2.SearchRequest(query="About notes", collection="v1.2_notes"), metadata=A)
    assert [h.document_id for h in hits.hits] == ["a.md"]


def test_tenant_b_cannot_search_or_delete_tenant_a_documents(retrieval) -> None:
    summary = retrieval.Ingest(iter([retrieval_pb2.Document(id="plan.md", collection="private",
                                                            text="Project Kestrel ships on 4 March.")]), metadata=A)
    assert summary.written == 1
    for mode in (retrieval_pb2.HYBRID, retrieval_pb2.DENSE, retrieval_pb2.LEXICAL):
        request = retrieval_pb2.SearchRequest(query="When does Kestrel ship?", collection="private", k=5, mode=mode)
        assert [h.document_id for h in retrieval.Search(request, metadata=A).hits] == ["plan.md"]
        for other in (B, ()):  # no tenant header: the default tenant, not a wildcard
            with pytest.raises(grpc.RpcError) as caught:
                retrieval.Search(request, metadata=other)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    deleted = retrieval.Delete(retrieval_pb2.DeleteRequest(collection="private", document_ids=["plan.md"]),
                               metadata=B)
    assert deleted.chunks_deleted == 0
    deleted = retrieval.Delete(retrieval_pb2.DeleteRequest(collection="private", document_ids=["plan.md"]),
                               metadata=A)
    assert deleted.chunks_deleted == 1


def test_bad_requests_are_invalid_argument(retrieval) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        retrieval.Search(retrieval_pb2.SearchRequest(query="x", collection="bad name!"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        retrieval.Search(retrieval_pb2.SearchRequest(query="x", collection="c", filter={"a]": "b"}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        retrieval.Delete(retrieval_pb2.DeleteRequest(collection="c"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        retrieval.Search(retrieval_pb2.SearchRequest(query="x", collection="c"),
                         metadata=(("x-sluice-tenant", "bad tenant"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_held_out_evaluation_meets_the_recall_target(retrieval) -> None:
    """The issue's target on the whole shipped corpus (250 documents), measured on the held-out questions: hybrid
    recall@5 ≥ 0.9 and above both single signals. Deterministic on Milvus Lite 2.5: two runs gave the same figures
    (dense 0.912, lexical 0.872, hybrid 0.928)."""
    documents, questions = load(split="test")
    ingest_corpus(retrieval, "eval_full", documents)
    scores = evaluate(retrieval, "eval_full", questions, k=5)
    print(f"\n[retrieval held-out] { {mode: (s.recall, round(s.mrr, 3)) for mode, s in scores.items()} }")
    assert scores["hybrid"].recall >= 0.9
    assert scores["hybrid"].recall > max(scores["dense"].recall, scores["lexical"].recall)
    assert scores["hybrid"].mrr > max(scores["dense"].mrr, scores["lexical"].mrr)
