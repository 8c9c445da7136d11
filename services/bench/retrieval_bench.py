"""`sluice bench retrieval`: ingestion throughput through the running stack, and search latency at 10k and 100k
chunks in Milvus Lite with the real search path.

1. Ingestion: generated documents go through the stack's retrieval service (`Ingest`: chunking, the Triton embedder
   for every chunk and sentence window, Milvus upsert, flush); chunks/s is the service's own count over its own time.
2. Search: embedding 100k chunks with MiniLM on 2 CPU cores would take hours, so each size is filled with generated
   chunk texts (unique names: a realistic BM25 vocabulary) whose vectors are real MiniLM vectors of `base` generated
   chunks (chunk + sentence windows, from the stack's embedder), reused with Gaussian noise (σ = 0.01 per dimension,
   then renormalised). The searches are real: the retrieval server (in this process, on the collection just filled)
   embeds each query through Triton, runs the dense and BM25 searches in Milvus Lite, re-scores and fuses; latency is
   measured at the gRPC client.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.bench.metrics import percentile
from services.common.settings import Settings
from services.retrieval.chunking import chunk_text
from services.retrieval.embedding_client import EmbeddingClient
from services.retrieval.server import create_server
from services.retrieval.store import ChunkRow, MilvusStore

COLLECTION = "bench"
TENANT = "bench"
SYLLABLES = ["vel", "dra", "kor", "ath", "mi", "sen", "tal", "ore", "quin", "bar", "lys", "tor", "fen", "ula", "zar",
             "eth", "nov", "ric", "mal", "ost", "pel", "gan", "hur", "dun"]
KINDS = ["lighthouse", "observatory", "library", "bridge", "brewery", "mill", "harbour", "museum"]
PLACES = ["Harrowmere", "Quillon Bay", "the Estrel Valley", "Dunmarrow", "Saltreach", "Corvane Heights", "Ostwick"]
PEOPLE = ["Mara Okonkwo", "Tobias Vantreck", "Ilse Holloway", "Oren Szabo", "Priya Marchetti", "Noor Lindqvist"]
MATERIALS = ["crimson brick", "ochre granite", "azure timber", "ivory limestone", "charcoal sandstone"]
MODES = {"hybrid": retrieval_pb2.HYBRID, "dense": retrieval_pb2.DENSE, "lexical": retrieval_pb2.LEXICAL}


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    kind: str
    text: str
    question: str


def facts(seed: int) -> Iterator[Fact]:
    """An endless stream of one-paragraph documents shaped like the evaluation corpus, each with a question."""
    rng = random.Random(seed)
    used: set[str] = set()
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
        if name in used:  # unique names, so a question has one answering document
            continue
        used.add(name)
        kind, place, person = rng.choice(KINDS), rng.choice(PLACES), rng.choice(PEOPLE)
        year, visitors = rng.randint(1780, 1990), rng.randint(2, 90) * 1000
        text = (f"# The {name} {kind.capitalize()}\n\nThe {name} {kind} stands in {place}. Built from "
                f"{rng.choice(MATERIALS)}, it is a landmark of the region. It opened in {year} under the direction "
                f"of {person}, and about {visitors:,} people visit it every year.")
        question = rng.choice([f"In what year did the {name} {kind} open?", f"Who opened the {name} {kind}?",
                               f"Which {kind} in {place} did {person} open in {year}?"])
        yield Fact(name, kind, text, question)


def _take(stream: Iterator[Fact], n: int) -> list[Fact]:
    return [next(stream) for _ in range(n)]


def measure_ingest(settings: Settings, documents: int, seed: int) -> dict:
    """Ingest through the stack's service, then delete what was written (found by its metadata tag)."""
    tag = f"bench-{time.time_ns()}"
    docs = _take(facts(seed), documents)
    metadata = (("x-sluice-tenant", TENANT),)
    with grpc.insecure_channel(settings.retrieval_url) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        started = time.perf_counter()
        summary = stub.Ingest(iter(retrieval_pb2.Document(id=f"{tag}/{i}.md", text=d.text, collection=COLLECTION,
                                                          metadata={"bench": tag}) for i, d in enumerate(docs)),
                              metadata=metadata, timeout=1800)
        wall = time.perf_counter() - started
        stub.Delete(retrieval_pb2.DeleteRequest(collection=COLLECTION, filter={"bench": tag}), metadata=metadata,
                    timeout=600)
    texts = sum(1 + len(c.windows) for d in docs for c in chunk_text(d.text))
    return {"documents": summary.documents, "chunks": summary.chunks, "texts_embedded": texts,
            "service_seconds": round(summary.seconds, 2), "client_seconds": round(wall, 2),
            "chunks_per_s": round(summary.chunks / summary.seconds, 1),
            "texts_embedded_per_s": round(texts / summary.seconds, 1)}


async def base_vectors(settings: Settings, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Real MiniLM vectors (chunk, sentence windows) of `count` generated one-chunk documents."""
    chunks = [chunk_text(d.text)[0] for d in _take(facts(seed), count)]
    embedder = EmbeddingClient(settings.triton_grpc_url, timeout_s=600)
    try:
        vectors = (await embedder.embed([t for c in chunks for t in (c.text, *c.windows)])).vectors
    finally:
        await embedder.close()
    out, offset = [], 0
    for c in chunks:
        out.append((vectors[offset], vectors[offset + 1:offset + 1 + len(c.windows)] if c.windows else None))
        offset += 1 + len(c.windows)
    return out


def _noisy(rng: np.random.Generator, vectors: np.ndarray) -> np.ndarray:
    noisy = vectors + rng.normal(0.0, 0.01, vectors.shape).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)


def fill(store: MilvusStore, size: int, base: list[tuple[np.ndarray, np.ndarray | None]], seed: int,
         batch: int = 2000) -> tuple[list[str], float]:
    """`size` one-chunk documents; returns a sample of their questions and the seconds the fill took."""
    rng = np.random.default_rng(seed)
    stream = facts(seed)
    questions: list[str] = []
    started = time.perf_counter()
    for start in range(0, size, batch):
        documents = []
        for i in range(start, min(size, start + batch)):
            fact = next(stream)
            if len(questions) < 1000 and i % max(1, size // 1000) == 0:
                questions.append(fact.question)
            vector, windows = base[i % len(base)]
            row = ChunkRow(f"doc{i}.md#0", f"doc{i}.md", 0, chunk_text(fact.text)[0].text, _noisy(rng, vector),
                           None if windows is None else _noisy(rng, windows))
            documents.append((f"doc{i}.md", f"h{i}", [row], {}))
        store.bulk_insert(COLLECTION, TENANT, documents)
    store.flush(COLLECTION)
    return questions, time.perf_counter() - started


async def measure_search(settings: Settings, store: MilvusStore, questions: list[str], queries: int) -> dict:
    server, port, _, embedder = await create_server(settings, f"{settings.host}:0", store=store)
    metadata = (("x-sluice-tenant", TENANT),)
    report = {}
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalStub(channel)
            for mode_name, mode in MODES.items():
                count = queries if mode_name == "hybrid" else max(20, queries // 4)
                totals, embeds, searches, found = [], [], [], 0
                for n in range(count + 5):  # the first 5 warm up
                    request = retrieval_pb2.SearchRequest(query=questions[n % len(questions)], collection=COLLECTION,
                                                          k=5, mode=mode)
                    started = time.perf_counter()
                    reply = await stub.Search(request, metadata=metadata, timeout=60)
                    if n >= 5:
                        totals.append((time.perf_counter() - started) * 1000)
                        embeds.append(reply.embed_ms)
                        searches.append(reply.search_ms)
                        found += len(reply.hits) == 5
                report[mode_name] = {"queries": count, "p50_ms": round(percentile(totals, 50), 1),
                                     "p99_ms": round(percentile(totals, 99), 1),
                                     "embed_p50_ms": round(percentile(embeds, 50), 1),
                                     "milvus_p50_ms": round(percentile(searches, 50), 1),
                                     "full_results": found}
    finally:
        await server.stop(1)
        await embedder.close()
    return report


async def _run(settings: Settings, sizes: list[int], queries: int, ingest_documents: int, base: int,
               results_dir: Path) -> dict:
    report: dict = {"ingest": await asyncio.to_thread(measure_ingest, settings, ingest_documents, 11)}
    print(f"ingest: {json.dumps(report['ingest'])}", flush=True)
    vectors = await base_vectors(settings, base, 12)
    report["search"] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
            store = await asyncio.to_thread(MilvusStore, str(Path(tmp) / "milvus.db"))
            try:
                questions, seconds = await asyncio.to_thread(fill, store, size, vectors, 13)
                count = await asyncio.to_thread(store.count, COLLECTION, TENANT)
                entry = {"chunks": count, "fill_seconds": round(seconds, 1),
                         **await measure_search(settings, store, questions, queries)}
            finally:
                await asyncio.to_thread(store.close)
        report["search"][str(size)] = entry
        print(f"search at {size}: {json.dumps(entry)}", flush=True)
    report["method"] = {"base_vectors": base, "noise_sigma": 0.01, "query": "generated name/place questions",
                        "k": 5, "note": __doc__.split("2. ")[1].strip().replace("\n", " ")}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "retrieval_bench.json").write_text(json.dumps(report, indent=2))
    return report


def run(settings: Settings, sizes: list[int], queries: int, ingest_documents: int, base: int,
        results_dir: Path) -> dict:
    return asyncio.run(_run(settings, sizes, queries, ingest_documents, base, results_dir))



def main(sizes: str, queries: int, ingest_documents: int, base: int, results: str) -> int:
    report = run(Settings.from_env(), [int(n) for n in sizes.split(",")], queries, ingest_documents, base,
                 Path(results))
    print(json.dumps(report, indent=2))
    return 0
