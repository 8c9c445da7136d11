"""Retrieval evaluation on the corpus shipped with the tests (tests/data/retrieval_eval): ingest it through the
retrieval service, ask every question in each mode, report recall@k and MRR (of the answering chunk, in the top k)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.settings import REPO_ROOT, Settings

CORPUS_DIR = REPO_ROOT / "tests" / "data" / "retrieval_eval"
MODES = {"dense": retrieval_pb2.DENSE, "lexical": retrieval_pb2.LEXICAL, "hybrid": retrieval_pb2.HYBRID}


@dataclass(frozen=True, slots=True)
class Score:
    recall: float
    mrr: float
    p50_ms: float


def load(corpus_dir: Path = CORPUS_DIR) -> tuple[list[dict], list[dict]]:
    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (corpus_dir / name).read_text().splitlines() if line.strip()]

    return read("corpus.jsonl"), read("questions.jsonl")


def ingest_corpus(stub: retrieval_pb2_grpc.RetrievalStub, collection: str, documents: list[dict],
                  metadata: tuple = ()) -> retrieval_pb2.IngestSummary:
    return stub.Ingest(iter(retrieval_pb2.Document(id=d["id"], text=d["text"], collection=collection)
                            for d in documents), metadata=metadata, timeout=600)


def evaluate(stub: retrieval_pb2_grpc.RetrievalStub, collection: str, questions: list[dict], k: int = 5,
             metadata: tuple = ()) -> dict[str, Score]:
    import time

    scores = {}
    for mode_name, mode in MODES.items():
        found, reciprocal, latencies = 0, 0.0, []
        for q in questions:
            started = time.perf_counter()
            reply = stub.Search(retrieval_pb2.SearchRequest(query=q["question"], collection=collection, k=k,
                                                            mode=mode), metadata=metadata, timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = [hit.chunk_id for hit in reply.hits]
            if q["chunk_id"] in ranked:
                found += 1
                reciprocal += 1.0 / (ranked.index(q["chunk_id"]) + 1)
        latencies.sort()
        scores[mode_name] = Score(found / len(questions), reciprocal / len(questions),
                                  latencies[len(latencies) // 2])
    return scores


def run_cli(k: int = 5, collection: str = "eval_corpus", settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    documents, questions = load()
    with grpc.insecure_channel(settings.retrieval_url) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        try:
            summary = ingest_corpus(stub, collection, documents)
            scores = evaluate(stub, collection, questions, k)
        except grpc.RpcError as exc:
            print(f"sluice eval: retrieval service at {settings.retrieval_url}: {exc.code().name}: {exc.details()}",
                  file=sys.stderr)
            return 1
    print(f"corpus: {len(documents)} documents ({summary.written} newly written), {len(questions)} questions, k={k}")
    print(f"{'mode':<8} {'recall@' + str(k):>9} {'MRR':>6} {'p50 ms':>7}")
    for mode, score in scores.items():
        print(f"{mode:<8} {score.recall:>9.3f} {score.mrr:>6.3f} {score.p50_ms:>7.1f}")
    return 0
