"""Retrieval evaluation on the corpus shipped with the tests (tests/data/retrieval_eval): ingest it through the
retrieval service, ask every question in each mode, report recall@k and MRR (of the answering chunk, in the top k).

The questions are split: retrieval settings are chosen on `tune`; `test` is held out and reported first."""

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
SPLITS = ("test", "tune")  # the held-out split first


@dataclass(frozen=True, slots=True)
class Score:
    recall: float
    mrr: float
    p50_ms: float


def load(corpus_dir: Path = CORPUS_DIR, split: str | None = None) -> tuple[list[dict], list[dict]]:
    """Documents and questions (of one split, or all)."""
    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (corpus_dir / name).read_text().splitlines() if line.strip()]

    questions = read("questions.jsonl")
    return read("corpus.jsonl"), [q for q in questions if split is None or q["split"] == split]


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


def format_table(split: str, questions: int, k: int, scores: dict[str, Score]) -> str:
    title = "held-out" if split == "test" else "settings chosen on this split"
    lines = [f"{split} split ({title}): {questions} questions",
             f"{'mode':<8} {'recall@' + str(k):>9} {'MRR':>6} {'p50 ms':>7}"]
    lines += [f"{mode:<8} {s.recall:>9.3f} {s.mrr:>6.3f} {s.p50_ms:>7.1f}" for mode, s in scores.items()]
    return "\n".join(lines)


def run_cli(k: int = 5, collection: str = "eval_corpus", settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    documents, _ = load()
    tables = []
    with grpc.insecure_channel(settings.retrieval_url) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        try:
            summary = ingest_corpus(stub, collection, documents)
            for split in SPLITS:
                questions = load(split=split)[1]
                tables.append(format_table(split, len(questions), k, evaluate(stub, collection, questions, k)))
        except grpc.RpcError as exc:
            print(f"sluice eval: retrieval service at {settings.retrieval_url}: {exc.code().name}: {exc.details()}",
                  file=sys.stderr)
            return 1
    print(f"corpus: {len(documents)} documents ({summary.written} newly written, {summary.chunks} chunks), k={k}")
    print("\n\n".join(tables))
    return 0
