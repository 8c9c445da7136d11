"""`sluice ingest PATH... --collection NAME`: send files to the retrieval service a batch at a time.

Each batch is committed before the next is read, and the service skips documents whose content hash is unchanged, so an
interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.settings import Settings
from services.retrieval.loaders import discover, read_text

BATCH = 16


def ingest(paths: list[str], collection: str, tenant: str | None = None, settings: Settings | None = None,
           out=sys.stderr) -> int:
    settings = settings or Settings.from_env()
    started = time.monotonic()
    try:
        files = list(discover([Path(p) for p in paths]))
    except FileNotFoundError as exc:
        print(f"sluice ingest: {exc}", file=out)
        return 2
    metadata = (("x-sluice-tenant", tenant),) if tenant else ()
    totals = {"documents": 0, "written": 0, "unchanged": 0, "chunks": 0, "failed": 0}
    with grpc.insecure_channel(settings.retrieval_url) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        for start in range(0, len(files), BATCH):
            batch = []
            for source in files[start:start + BATCH]:
                try:
                    text = read_text(source.path)
                except Exception as exc:  # one unreadable file must not stop the run
                    print(f"\nsluice ingest: skipped {source.path}: {exc}", file=out)
                    totals["failed"] += 1
                    continue
                batch.append(retrieval_pb2.Document(id=source.document_id, text=text, collection=collection,
                                                    metadata={"source": source.document_id,
                                                              "type": source.path.suffix.lower().lstrip(".")}))
            try:
                summary = stub.Ingest(iter(batch), metadata=metadata, timeout=600)
            except grpc.RpcError as exc:
                print(f"\nsluice ingest: the retrieval service at {settings.retrieval_url} failed: "
                      f"{exc.code().name}: {exc.details()}\n(re-run the same command to resume)", file=out)
                return 1
            for key in ("documents", "written", "unchanged", "chunks"):
                totals[key] += getattr(summary, key)
            done = min(start + BATCH, len(files))
            width = 30
            bar = "#" * (width * done // max(len(files), 1))
            print(f"\r[{bar:<{width}}] {done}/{len(files)} files  {totals['chunks']} chunks  "
                  f"{totals['unchanged']} unchanged", end="", file=out, flush=True)
    seconds = time.monotonic() - started
    print(file=out)
    print(f"ingested {totals['documents']} documents into {collection!r}: {totals['written']} written, "
          f"{totals['chunks']} chunks, {totals['unchanged']} skipped unchanged, {totals['failed']} unreadable, "
          f"{seconds:.1f} s")
    return 0 if not totals["failed"] else 1
