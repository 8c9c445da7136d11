"""`sluice ingest PATH... --collection NAME`: send files through the authenticated API (sluice.v1.Collections via
Envoy) a batch at a time. The tenant is the API key's (--api-key, SLUICE_API_KEY, else the local dev key).

Each batch is committed before the next is read, and documents whose content is unchanged are skipped, so an
interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

import grpc
from sluice.v1 import collections_pb2, collections_pb2_grpc, retrieval_pb2

from services.cli.api import api_target, auth_metadata, describe_rpc_error, is_transient, resolve_api_key
from services.common.settings import Settings
from services.retrieval.collection_names import NAME_RULE, is_valid_name
from services.retrieval.loaders import discover, read_text

BATCH = 16


def ingest(paths: list[str], collection: str, api_key: str | None = None, settings: Settings | None = None,
           out: TextIO | None = None) -> int:
    settings = settings or Settings.from_env()
    out = out or sys.stderr  # looked up per call (tests capture it)
    if not is_valid_name(collection):
        print(f"sluice ingest: invalid collection name {collection!r}: use {NAME_RULE}", file=out)
        return 2
    started = time.monotonic()
    try:
        files = list(discover([Path(p) for p in paths]))
    except FileNotFoundError as exc:
        print(f"sluice ingest: {exc}", file=out)
        return 2
    if not files:
        print("sluice ingest: no .txt, .md, .markdown, .html, .htm or .pdf files found", file=out)
        return 2
    key, _ = resolve_api_key(settings, api_key)
    totals = {"documents": 0, "written": 0, "unchanged": 0, "chunks": 0, "failed": 0}
    tenant = ""
    with grpc.insecure_channel(api_target(settings),
                               options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        stub = collections_pb2_grpc.CollectionsStub(channel)
        for start in range(0, len(files), BATCH):
            batch = []
            for source in files[start:start + BATCH]:
                try:
                    text = read_text(source.path)
                except Exception as exc:  # one unreadable file must not stop the run
                    print(f"\nsluice ingest: skipped {source.path}: {exc}", file=out)
                    totals["failed"] += 1
                    continue
                batch.append(retrieval_pb2.Document(id=source.document_id, text=text,
                                                    metadata={"source": source.document_id,
                                                              "type": source.path.suffix.lower().lstrip(".")}))
            try:
                summary = stub.Ingest(collections_pb2.IngestRequest(collection=collection, documents=batch),
                                      metadata=auth_metadata(key), timeout=600)
            except grpc.RpcError as exc:
                hint = "\n(re-run the same command to resume)" if is_transient(exc) and start else ""
                print(f"\nsluice ingest: {describe_rpc_error(exc, settings)}{hint}", file=out)
                return 1
            tenant = summary.tenant or tenant
            for name in ("documents", "written", "unchanged", "chunks"):
                totals[name] += getattr(summary, name)
            done = min(start + BATCH, len(files))
            width = 30
            bar = "#" * (width * done // max(len(files), 1))
            print(f"\r[{bar:<{width}}] {done}/{len(files)} files  {totals['chunks']} chunks  "
                  f"{totals['unchanged']} unchanged", end="", file=out, flush=True)
    seconds = time.monotonic() - started
    print(file=out)
    print(f"ingested {totals['documents']} documents into collection {collection!r} of tenant {tenant!r}: "
          f"{totals['written']} written, {totals['chunks']} chunks, {totals['unchanged']} skipped unchanged, "
          f"{totals['failed']} unreadable, {seconds:.1f} s")
    return 0 if not totals["failed"] else 1
