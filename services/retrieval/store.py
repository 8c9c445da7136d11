"""Chunks in Milvus through pymilvus' MilvusClient: a Milvus Lite file by default, any Milvus server by URI.

One Milvus collection per Sluice collection (its Milvus-safe name from collection_names.py). Each row is a chunk: dense
vector, the text (analysed for BM25 by Milvus' own function into a sparse vector), document and chunk ids, the
document's content hash, the tenant (a partition key), metadata JSON, and the chunk's vectors packed for re-scoring
(whole chunk first, then its sentence windows; float16, base64 — neither Lite nor a 2.5 server has a variable-length
list of vectors). Every read and delete is built here with `tenant_id == <tenant>` first, so no caller can widen it;
metadata filters are structured (key == value), never raw expressions. On a Milvus server `tenant_id` is also the
partition key, so a search touches only its tenant's partitions; Milvus Lite 2.5 rejects every filter on a collection
with a partition key, so there the mandatory filter alone isolates tenants.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient

from services.retrieval import collection_names
from services.retrieval.embedding_model import DIMENSIONS

_META_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TEXT_BYTES = 65_535
MAX_ID = 1024
MAX_QUERY_ROWS = 16_384  # Milvus' cap on one query's result window
# Lite's analyser lower-cases and splits on \w+; Milvus server accepts the same parameters.
STOP_WORDS = ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "how", "in", "is", "it", "its",
              "of", "on", "or", "that", "the", "to", "was", "were", "what", "when", "where", "which", "who", "why",
              "will", "with", "does", "do", "did"]
ANALYZER = {"tokenizer": "standard", "filter": ["lowercase", {"type": "stop", "stop_words": STOP_WORDS}]}
OUTPUT_FIELDS = ["chunk_id", "document_id", "text", "metadata"]
PACKED = "packed_vectors"  # absent from collections created before it existed: those fall back to the chunk vector
MAX_PACKED_VECTORS = 16  # the whole chunk + up to 15 sentence windows (chunking.MAX_WINDOWS is 12)
MAX_PACKED_CHARS = -(-MAX_PACKED_VECTORS * DIMENSIONS * 2 // 3) * 4


class InvalidRequest(ValueError):
    """A caller error: bad collection name, filter key, or id."""


@dataclass(frozen=True, slots=True)
class ChunkRow:
    chunk_id: str
    document_id: str
    index: int
    text: str
    vector: np.ndarray  # [384] float32, the whole chunk
    windows: np.ndarray | None = None  # [W, 384] float32, its sentence windows (None: a one-sentence chunk)


@dataclass(slots=True)
class StoredHit:
    chunk_id: str
    document_id: str
    text: str
    score: float  # higher is better
    metadata: dict[str, str] = field(default_factory=dict)
    vectors: np.ndarray | None = None  # [1 + W, 384] float32: the chunk's packed vectors, when the collection has them


def pack_vectors(vector: np.ndarray, windows: np.ndarray | None) -> str:
    rows = vector[None] if windows is None or not len(windows) else np.vstack([vector[None], windows])
    if len(rows) > MAX_PACKED_VECTORS:
        raise InvalidRequest(f"at most {MAX_PACKED_VECTORS} vectors per chunk")
    return base64.b64encode(rows.astype("<f2").tobytes()).decode("ascii")


def unpack_vectors(packed: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed), dtype="<f2").astype(np.float32).reshape(-1, DIMENSIONS)


def physical_name(collection: str) -> str:
    try:
        return collection_names.physical_name(collection)
    except collection_names.InvalidCollectionName as exc:
        raise InvalidRequest(str(exc)) from None


def _literal(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def build_filter(tenant: str, document_ids: Sequence[str] = (), metadata: dict[str, str] | None = None) -> str:
    """The one place filter expressions are written: tenant first, then only quoted literals."""
    if not tenant:
        raise InvalidRequest("a tenant is required")
    clauses = [f"tenant_id == {_literal(tenant)}"]
    if document_ids:
        clauses.append(f"document_id in [{', '.join(_literal(d) for d in document_ids)}]")
    for key, value in sorted((metadata or {}).items()):
        if not _META_KEY.match(key):
            raise InvalidRequest(f"metadata filter keys must match {_META_KEY.pattern}, got {key!r}")
        clauses.append(f"metadata[{_literal(key)}] == {_literal(value)}")
    return " and ".join(clauses)


def content_hash(text: str, metadata: dict[str, str], chunker_version: str) -> str:
    payload = json.dumps([text, sorted(metadata.items()), chunker_version], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _primary_key(tenant: str, document_id: str, digest: str, index: int) -> str:
    return hashlib.sha256(f"{tenant}\0{document_id}\0{digest}\0{index}".encode()).hexdigest()[:40]


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode()
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


class MilvusStore:
    """Thread-safe: the service calls it from worker threads. Writes and collection set-up hold one lock (a document's
    upsert and stale-chunk delete must not interleave with another ingest of it); searches do not."""

    def __init__(self, uri: str, token: str | None = None) -> None:
        self.uri = uri
        self.lite = uri.endswith(".db")  # pymilvus' own rule: a local path ending in .db runs Milvus Lite
        self.client = MilvusClient(uri, token=token or "")
        self._ready: dict[str, bool] = {}  # loaded collections → whether they have PACKED
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.client.close()

    def _collection(self, collection: str, create: bool) -> str | None:
        name = physical_name(collection)
        if name in self._ready:
            return name
        if not self.client.has_collection(name):
            if not create:
                return None
            self._create(name)
        self.client.load_collection(name)
        fields = self.client.describe_collection(name)["fields"]
        self._ready[name] = any(f["name"] == PACKED for f in fields)
        return name

    def _create(self, name: str) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant_id", DataType.VARCHAR, max_length=256, is_partition_key=not self.lite)
        schema.add_field("document_id", DataType.VARCHAR, max_length=MAX_ID)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=MAX_ID + 16)
        schema.add_field("chunk_index", DataType.INT32)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True,
                         analyzer_params=ANALYZER)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=DIMENSIONS)
        schema.add_field(PACKED, DataType.VARCHAR, max_length=MAX_PACKED_CHARS)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"], output_field_names=["sparse"]))
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type="AUTOINDEX", metric_type="IP")  # unit vectors: IP == cosine
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    # --- writes -------------------------------------------------------------------------------------------------

    def document_hashes(self, collection: str, tenant: str, document_id: str) -> set[str]:
        with self._lock:
            name = self._collection(collection, create=False)
            if name is None:
                return set()
            rows = self.client.query(name, filter=build_filter(tenant, [document_id]),
                                     output_fields=["content_hash"], limit=MAX_QUERY_ROWS)
        return {row["content_hash"] for row in rows}

    @staticmethod
    def _rows(tenant: str, document_id: str, digest: str, rows: Sequence[ChunkRow], metadata: dict[str, str],
              packed: bool) -> list[dict]:
        if not document_id or len(document_id) > MAX_ID:
            raise InvalidRequest(f"document id must be 1..{MAX_ID} characters")
        data = [{"pk": _primary_key(tenant, document_id, digest, r.index), "tenant_id": tenant,
                 "document_id": document_id, "chunk_id": r.chunk_id, "chunk_index": r.index, "content_hash": digest,
                 "text": _truncate_utf8(r.text, MAX_TEXT_BYTES), "metadata": metadata,
                 "dense": r.vector.astype(np.float32).tolist()} for r in rows]
        if packed:
            for row, r in zip(data, rows, strict=True):
                row[PACKED] = pack_vectors(r.vector, r.windows)
        return data

    def replace_document(self, collection: str, tenant: str, document_id: str, digest: str,
                         rows: Sequence[ChunkRow], metadata: dict[str, str]) -> None:
        """Writes the new chunks, then removes the document's chunks of any other hash: a crash in between leaves
        two versions, which the next ingest of the document (seeing two hashes) repairs."""
        stale = f"{build_filter(tenant, [document_id])} and content_hash != {_literal(digest)}"
        with self._lock:
            name = self._collection(collection, create=True)
            data = self._rows(tenant, document_id, digest, rows, metadata, self._ready[name])
            if data:
                self.client.upsert(name, data)
            self.client.delete(name, filter=stale)

    def bulk_insert(self, collection: str, tenant: str,
                    documents: Sequence[tuple[str, str, Sequence[ChunkRow], dict[str, str]]]) -> None:
        """(document id, digest, chunks, metadata) of documents not yet in the collection, written in one insert
        with no stale-version cleanup: for filling a fresh collection (the retrieval benchmark)."""
        with self._lock:
            name = self._collection(collection, create=True)
            data = [row for document_id, digest, rows, metadata in documents
                    for row in self._rows(tenant, document_id, digest, rows, metadata, self._ready[name])]
            if data:
                self.client.insert(name, data)

    def delete(self, collection: str, tenant: str, document_ids: Sequence[str] = (),
               metadata: dict[str, str] | None = None) -> int:
        if not document_ids and not metadata:
            raise InvalidRequest("delete needs document ids or a metadata filter")
        expression = build_filter(tenant, document_ids, metadata)
        with self._lock:
            name = self._collection(collection, create=False)
            if name is None:
                return 0
            deleted = 0
            while True:  # a query window at a time, so the count is exact on Lite and on a server alike
                pks = [row["pk"] for row in self.client.query(name, filter=expression, output_fields=["pk"],
                                                              limit=MAX_QUERY_ROWS)]
                if not pks:
                    return deleted
                self.client.delete(name, ids=pks)
                deleted += len(pks)

    def flush(self, collection: str) -> None:
        """Seals recent writes into an indexed segment. Milvus Lite searches rows still in its memtable by rebuilding
        their indexes on every search: 250 fresh chunks searched 5-30x slower before a flush than after."""
        with self._lock:
            name = self._collection(collection, create=False)
            if name is not None:
                self.client.flush(name)

    def count(self, collection: str, tenant: str, first_chunks_only: bool = False) -> int:
        """The tenant's chunks in the collection (or its documents: each has one chunk 0)."""
        expression = build_filter(tenant) + (" and chunk_index == 0" if first_chunks_only else "")
        with self._lock:
            name = self._collection(collection, create=False)
            if name is None:
                return 0
            rows = self.client.query(name, filter=expression, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def delete_tenant_rows(self, collection: str, tenant: str) -> int:
        """Every chunk of the tenant in the collection (the collection itself stays: other tenants share it)."""
        expression = build_filter(tenant)
        with self._lock:
            name = self._collection(collection, create=False)
            if name is None:
                return 0
            deleted = 0
            while pks := [row["pk"] for row in self.client.query(name, filter=expression, output_fields=["pk"],
                                                                  limit=MAX_QUERY_ROWS)]:
                self.client.delete(name, ids=pks)
                deleted += len(pks)
            if deleted:
                self.client.flush(name)
            return deleted

    # --- reads --------------------------------------------------------------------------------------------------

    def _search(self, collection: str, data: list, field_name: str, metric: str, limit: int,
                expression: str) -> list[StoredHit]:
        with self._lock:
            name = self._collection(collection, create=False)
        if name is None:
            return []
        # Searches run outside the lock: Milvus (Lite included) is a separate process behind a thread-safe gRPC
        # client, so the dense and BM25 searches of one query, and concurrent queries, overlap.
        fields = OUTPUT_FIELDS + [PACKED] if self._ready[name] else OUTPUT_FIELDS
        result = self.client.search(name, data=data, anns_field=field_name, limit=limit, filter=expression,
                                    output_fields=fields, search_params={"metric_type": metric})
        hits = []
        for hit in result[0]:
            entity = hit["entity"]
            # BM25 comes back as a positive score from Milvus (Lite 3.x reported it negated; abs() reads both).
            score = float(hit["distance"])
            packed = entity.get(PACKED)
            hits.append(StoredHit(entity["chunk_id"], entity["document_id"], entity["text"],
                                  abs(score) if metric == "BM25" else score,
                                  {k: str(v) for k, v in (entity.get("metadata") or {}).items()},
                                  unpack_vectors(packed) if packed else None))
        return hits

    def dense_search(self, collection: str, tenant: str, vector: np.ndarray, limit: int,
                     document_ids: Sequence[str] = (), metadata: dict[str, str] | None = None) -> list[StoredHit]:
        return self._search(collection, [vector.astype(np.float32).tolist()], "dense", "IP", limit,
                            build_filter(tenant, document_ids, metadata))

    def lexical_search(self, collection: str, tenant: str, query: str, limit: int,
                       document_ids: Sequence[str] = (), metadata: dict[str, str] | None = None) -> list[StoredHit]:
        return self._search(collection, [query], "sparse", "BM25", limit,
                            build_filter(tenant, document_ids, metadata))
