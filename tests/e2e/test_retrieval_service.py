"""The retrieval service in the running stack: `sluice ingest` of a folder, search through gRPC, re-ingest skips
unchanged files, tenants are isolated on every method, and a small slice of the evaluation corpus is answered."""

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


def test_ingest_cli_then_search_finds_the_answering_document(stack: Settings, folder: Path,
                                                             retrieval, capsys: pytest.CaptureFixture) -> None:
    assert ingest([str(folder)], "manuals", settings=stack) == 0
    out = capsys.readouterr()
    assert "3 documents" in out.out and "3 written" in out.out and "0 skipped unchanged" in out.out
    reply = retrieval.Search(retrieval_pb2.SearchRequest(query="How often should I descale the kettle?",
                                                         collection="manuals", k=3))
    assert reply.hits[0].document_id == "guides/kettle.md"
    assert reply.hits[0].chunk_id.startswith("guides/kettle.md#")
    assert "citric acid" in reply.hits[0].text and reply.hits[0].metadata["type"] == "md"
    html_hit = retrieval.Search(retrieval_pb2.SearchRequest(query="toaster browning levels", collection="manuals",
                                                            k=1, filter={"type": "html"}))
    assert [h.document_id for h in html_hit.hits] == ["faq.html"]
    # Resumable and idempotent: a second run writes nothing.
    assert ingest([str(folder)], "manuals", settings=stack) == 0
    assert "0 written" in capsys.readouterr().out


def test_tenant_b_cannot_search_or_delete_tenant_a_documents(retrieval) -> None:
    summary = retrieval.Ingest(iter([retrieval_pb2.Document(id="plan.md", collection="private",
                                                            text="Project Kestrel ships on 4 March.")]), metadata=A)
    assert summary.written == 1
    for mode in (retrieval_pb2.HYBRID, retrieval_pb2.DENSE, retrieval_pb2.LEXICAL):
        request = retrieval_pb2.SearchRequest(query="When does Kestrel ship?", collection="private", k=5, mode=mode)
        assert [h.document_id for h in retrieval.Search(request, metadata=A).hits] == ["plan.md"]
        assert list(retrieval.Search(request, metadata=B).hits) == []
        assert list(retrieval.Search(request).hits) == []  # no tenant header: the default tenant, not a wildcard
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
