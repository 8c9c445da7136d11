"""Ingestion through the authenticated API, as a newcomer would use it: OpenAI-style /v1/files + /v1/vector_stores
with the real `openai` SDK, and the native sluice.v1.Collections service over gRPC, both through Envoy. The tenant is
always the key's; a chat naming a collection the tenant does not have is a 404 collection_not_found; citations carry
a snippet, the document's source and a score. Also the edge's /healthz, /readyz and /openapi.yaml."""

from __future__ import annotations

import grpc
import httpx
import openai
import pytest
import yaml
from sluice.v1 import collections_pb2, collections_pb2_grpc, retrieval_pb2

from services.common.settings import Settings

pytestmark = pytest.mark.stack

NOTES = b"# Office notes\n\nThe Heron meeting room is booked every Tuesday for the design review.\n"


def _client(stack: Settings, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=key, max_retries=0, timeout=120)


def _chat(stack: Settings, key: str, collections: list[str]) -> httpx.Response:
    body = {"model": stack.model_name, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Which room is booked on Tuesday for the design review?"}],
            "retrieval": {"collections": collections}}
    return httpx.post(f"{stack.public_base_url}/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}"})


def test_openai_files_and_vector_stores_then_a_chat_cites_the_file(stack: Settings, tenant_keys) -> None:
    key = tenant_keys("tenant-vs", "enterprise")
    client = _client(stack, key)
    uploaded = client.files.create(file=("office-notes.md", NOTES), purpose="assistants")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(NOTES) and uploaded.filename == "office-notes.md"
    assert uploaded.id in [f.id for f in client.files.list().data]
    store = client.vector_stores.create(name="team-notes.v1")  # '-' and '.' are fine
    assert store.id == "team-notes.v1" and store.file_counts.total == 0
    attached = client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)
    assert attached.status == "completed" and attached.vector_store_id == store.id
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 1
    assert store.id in [s.id for s in client.vector_stores.list().data]

    reply = _chat(stack, key, [store.id])
    assert reply.status_code == 200, reply.text
    citation = reply.json()["citations"][0]
    assert citation["source"] == "office-notes.md" and citation["collection"] == "team-notes.v1"
    assert "Heron meeting room" in citation["snippet"] and citation["score"] > 0

    other = tenant_keys("tenant-vs-other", "enterprise")  # another tenant cannot see or use the store
    assert store.id not in [s.id for s in _client(stack, other).vector_stores.list().data]
    refused = _chat(stack, other, [store.id])
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "collection_not_found"
    with pytest.raises(openai.NotFoundError):
        _client(stack, other).vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)

    assert client.vector_stores.delete(store.id).deleted
    gone = _chat(stack, key, [store.id])
    assert gone.status_code == 404 and gone.json()["error"]["param"] == "retrieval.collections"
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_bad_uploads_and_unknown_collections_are_openai_shaped_errors(stack: Settings, api_key: str) -> None:
    client = _client(stack, api_key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("image.png", b"\x89PNG"), purpose="assistants")
    assert caught.value.code == "unsupported_file"
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(name="no spaces please")
    reply = _chat(stack, api_key, ["never-created"])
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "collection_not_found" and "never-created" in reply.json()["error"][
        "message"]
    with pytest.raises(openai.AuthenticationError):
        _client(stack, "sk-sluice-wrong").vector_stores.list()


def test_native_collections_service_through_envoy_uses_the_keys_tenant(stack: Settings, tenant_keys) -> None:
    key = tenant_keys("tenant-native", "enterprise")
    auth = (("authorization", f"Bearer {key}"), ("x-sluice-tenant", "someone-else"))  # the header is ignored
    with grpc.insecure_channel(f"{stack.host}:{stack.http_port}") as channel:
        stub = collections_pb2_grpc.CollectionsStub(channel)
        summary = stub.Ingest(collections_pb2.IngestRequest(collection="my-docs", documents=[
            retrieval_pb2.Document(id="a.md", text="Aurora kettles are descaled every six weeks.")]), metadata=auth)
        assert (summary.tenant, summary.written, summary.chunks) == ("tenant-native", 1, 1)
        listed = stub.ListCollections(retrieval_pb2.ListCollectionsRequest(), metadata=auth)
        assert listed.tenant == "tenant-native" and [c.name for c in listed.collections] == ["my-docs"]
        hits = stub.Search(retrieval_pb2.SearchRequest(query="descale kettle", collection="my-docs"), metadata=auth)
        assert [h.document_id for h in hits.hits] == ["a.md"]
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListCollections(retrieval_pb2.ListCollectionsRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name="my-docs"),
                                     metadata=auth).chunks_deleted == 1
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCollection(retrieval_pb2.GetCollectionRequest(name="my-docs"), metadata=auth)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_readiness_openapi_and_the_playground_are_served(stack: Settings) -> None:
    base = f"http://{stack.host}:{stack.http_port}"
    live = httpx.get(f"{base}/healthz", timeout=10)
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert set(ready.json()["checks"]) >= {"generate", "input_guard", "retrieve", "output_guard"}
    spec = httpx.get(f"{base}/openapi.yaml", timeout=10)
    assert spec.status_code == 200 and spec.headers["content-type"].startswith("application/yaml")
    assert "/v1/chat/completions" in yaml.safe_load(spec.text)["paths"]
    page = httpx.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Sluice playground</title>" in page.text
    script = httpx.get(f"{base}/playground.js", timeout=10)
    assert script.status_code == 200 and "/v1/chat/completions" in script.text
    for text in (page.text, script.text):  # nothing is loaded from the internet
        assert "https://" not in text and "http://" not in text
    assert httpx.post(f"{base}/", timeout=10).status_code == 404  # only GET is served there
