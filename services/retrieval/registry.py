"""Which collections each tenant has: one small Milvus collection of (tenant, name, created_at) rows.

Chunks of every tenant share a physical collection (tenant_id filters them apart), so a collection "exists" for a
tenant only through this registry: it is what makes a search of a collection the tenant never created a NOT_FOUND
instead of an empty answer, and what lists an empty collection created ahead of its first document. A collection
written before the registry existed is registered the first time it is found to hold the tenant's chunks.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass

from pymilvus import DataType, MilvusClient

from services.retrieval.collection_names import check_name

REGISTRY = "sluicemeta_collections"  # outside both physical prefixes (sluice_, sluicex_)
_LIST_LIMIT = 16_384


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    created_at: int


def _key(tenant: str, name: str) -> str:
    return hashlib.sha256(f"{tenant}\0{name}".encode()).hexdigest()[:40]


class CollectionRegistry:
    """Thread-safe; answers for known (tenant, name) pairs come from memory (this process is the only writer)."""

    def __init__(self, client: MilvusClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], int] = {}
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        if not self.client.has_collection(REGISTRY):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("tenant_id", DataType.VARCHAR, max_length=256)
            schema.add_field("name", DataType.VARCHAR, max_length=128)
            schema.add_field("created_at", DataType.INT64)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one vector field
            index = self.client.prepare_index_params()
            index.add_index("unused", index_type="FLAT", metric_type="L2")
            self.client.create_collection(REGISTRY, schema=schema, index_params=index, consistency_level="Strong")
        self.client.load_collection(REGISTRY)
        self._ready = True

    def get(self, tenant: str, name: str) -> Registered | None:
        with self._lock:
            if (tenant, name) in self._known:
                return Registered(name, self._known[(tenant, name)])
            self._ensure()
            rows = self.client.query(REGISTRY, filter=f"pk == {json.dumps(_key(tenant, name))}",
                                     output_fields=["created_at"])
            if not rows:
                return None
            self._known[(tenant, name)] = int(rows[0]["created_at"])
            return Registered(name, int(rows[0]["created_at"]))

    def add(self, tenant: str, name: str) -> Registered:
        """Registers the collection (no-op when the tenant has it); returns its entry."""
        check_name(name)
        existing = self.get(tenant, name)
        if existing is not None:
            return existing
        created = int(time.time())
        with self._lock:
            self._ensure()
            self.client.upsert(REGISTRY, [{"pk": _key(tenant, name), "tenant_id": tenant, "name": name,
                                           "created_at": created, "unused": [0.0, 0.0]}])
            self._known[(tenant, name)] = created
        return Registered(name, created)

    def remove(self, tenant: str, name: str) -> None:
        with self._lock:
            self._ensure()
            self.client.delete(REGISTRY, filter=f"pk == {json.dumps(_key(tenant, name))}")
            self._known.pop((tenant, name), None)

    def list(self, tenant: str) -> list[Registered]:
        with self._lock:
            self._ensure()
            rows = self.client.query(REGISTRY, filter=f"tenant_id == {json.dumps(tenant)}",
                                     output_fields=["name", "created_at"], limit=_LIST_LIMIT)
        return sorted((Registered(row["name"], int(row["created_at"])) for row in rows), key=lambda r: r.name)
