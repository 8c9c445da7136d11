"""`sluice collections list|delete`: the API key's tenant's retrieval collections, through the API."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import grpc
from sluice.v1 import collections_pb2_grpc, retrieval_pb2

from services.cli.api import API_KEY_HELP, api_target, auth_metadata, describe_rpc_error, resolve_api_key
from services.common.settings import Settings


def _stub(channel: grpc.Channel) -> collections_pb2_grpc.CollectionsStub:
    return collections_pb2_grpc.CollectionsStub(channel)


def list_collections(api_key: str | None, as_json: bool) -> int:
    settings = Settings.from_env()
    key, _ = resolve_api_key(settings, api_key)
    with grpc.insecure_channel(api_target(settings)) as channel:
        try:
            reply = _stub(channel).ListCollections(retrieval_pb2.ListCollectionsRequest(),
                                                   metadata=auth_metadata(key), timeout=30)
        except grpc.RpcError as exc:
            print(f"sluice collections: {describe_rpc_error(exc, settings)}", file=sys.stderr)
            return 1
    rows = [{"name": c.name, "documents": c.documents, "chunks": c.chunks,
             "created_at": datetime.fromtimestamp(c.created_at, UTC).isoformat(timespec="seconds")}
            for c in reply.collections]
    if as_json:
        print(json.dumps({"tenant": reply.tenant, "collections": rows}, indent=2))
        return 0
    if not rows:
        print(f"tenant {reply.tenant!r} has no collections (create one with `sluice ingest PATH --collection NAME`)")
        return 0
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    print(f"tenant {reply.tenant!r}")
    print(f"{'NAME':<{width}}  {'DOCUMENTS':>9}  {'CHUNKS':>7}  CREATED")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['documents']:>9}  {r['chunks']:>7}  {r['created_at']}")
    return 0


def delete_collection(name: str, api_key: str | None, as_json: bool) -> int:
    settings = Settings.from_env()
    key, _ = resolve_api_key(settings, api_key)
    with grpc.insecure_channel(api_target(settings)) as channel:
        try:
            reply = _stub(channel).DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name=name),
                                                    metadata=auth_metadata(key), timeout=120)
        except grpc.RpcError as exc:
            print(f"sluice collections: {describe_rpc_error(exc, settings)}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps({"name": reply.name, "deleted": True, "chunks_deleted": reply.chunks_deleted}))
    else:
        print(f"deleted collection {reply.name!r} ({reply.chunks_deleted} chunks)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    collections = sub.add_parser("collections", help="list or delete your retrieval collections (through the API)")
    collections_sub = collections.add_subparsers(dest="collections_command", required=True)
    listing = collections_sub.add_parser("list", help="the collections of the API key's tenant")
    listing.add_argument("--api-key", default=None, help=API_KEY_HELP)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=lambda args: list_collections(args.api_key, args.json))
    delete = collections_sub.add_parser("delete", help="delete a collection and all its chunks (your tenant's only)")
    delete.add_argument("name", help="the collection's name")
    delete.add_argument("--api-key", default=None, help=API_KEY_HELP)
    delete.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    delete.set_defaults(func=lambda args: delete_collection(args.name, args.api_key, args.json))
