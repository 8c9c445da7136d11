"""The `retrieve` server tool against a fake Retrieval stub: argument schema, the Search request and tenant metadata,
passage formatting and bounds, and errors becoming tool error text (through ServerTool, as the runner sees them)."""

from __future__ import annotations

import asyncio
import contextvars

import grpc
import pytest
from sluice.v1 import retrieval_pb2

from services.orchestrator.tools.registry import ServerTool, builtin_registry
from services.orchestrator.tools.retrieve_tool import (
    MAX_OUTPUT_CHARS,
    MAX_PASSAGE_CHARS,
    NO_RESULTS,
    RETRIEVE,
    RetrieveTool,
    request_tenant,
)


class FakeStub:
    def __init__(self, hits=(), error: Exception | None = None) -> None:
        self.hits = list(hits)
        self.error = error
        self.calls: list[tuple[retrieval_pb2.SearchRequest, tuple, float]] = []

    def Search(self, request, metadata=(), timeout=None):  # noqa: N802 - gRPC method name
        self.calls.append((request, tuple(metadata), timeout))
        if self.error is not None:
            raise self.error
        return retrieval_pb2.SearchResponse(hits=self.hits[:request.k])


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def hit(doc: str, chunk: str, text: str, score: float = 1.0) -> retrieval_pb2.Hit:
    return retrieval_pb2.Hit(document_id=doc, chunk_id=chunk, text=text, score=score)


def run(tool: ServerTool, arguments: dict, tenant: str | None = None):
    async def go():
        if tenant is not None:
            request_tenant.set(tenant)
        return await tool.run(arguments)
    return contextvars.Context().run(asyncio.run, go())


def server_tool(stub: FakeStub) -> ServerTool:
    return ServerTool(RETRIEVE, RetrieveTool(stub_factory=lambda: stub), timeout_s=2.0)


@pytest.mark.parametrize(("arguments", "valid"), [
    ({"query": "kettle", "collection": "docs"}, True),
    ({"query": "kettle", "collection": "docs", "top_k": 10}, True),
    ({"query": "kettle"}, False),
    ({"collection": "docs"}, False),
    ({"query": "kettle", "collection": "docs", "top_k": 0}, False),
    ({"query": "kettle", "collection": "docs", "top_k": 11}, False),
    ({"query": "kettle", "collection": "docs", "top_k": "3"}, False),
    ({"query": 3, "collection": "docs"}, False),
])
def test_arguments_schema(arguments: dict, valid: bool) -> None:
    assert (RETRIEVE.argument_error(arguments) is None) == valid


def test_search_request_tenant_and_formatting() -> None:
    stub = FakeStub([hit("kettle.md", "c1", "Descale the\n kettle   every six weeks."),
                     hit("faq.md", "c7", "Toasters.", 0.5)])
    result = run(server_tool(stub), {"query": " descale ", "collection": "handbook", "top_k": 2}, tenant="acme")
    assert result.ok
    assert result.output == "[kettle.md#c1] Descale the kettle every six weeks.\n[faq.md#c7] Toasters."
    ((request, metadata, timeout),) = stub.calls
    assert (request.query, request.collection, request.k) == ("descale", "handbook", 2)
    assert metadata == (("x-sluice-tenant", "acme"),)
    assert timeout == 4.5


def test_default_top_k_no_tenant_and_no_hits() -> None:
    stub = FakeStub([])
    result = run(server_tool(stub), {"query": "q", "collection": "c"})
    assert (result.ok, result.output) == (True, NO_RESULTS)
    ((request, metadata, _),) = stub.calls
    assert request.k == 4 and metadata == ()


def test_output_is_bounded() -> None:
    stub = FakeStub([hit(f"d{i}", f"c{i}", "word " * 500) for i in range(10)])
    output = run(server_tool(stub), {"query": "q", "collection": "c", "top_k": 10}).output
    lines = output.split("\n")
    assert len(output) <= MAX_OUTPUT_CHARS and 1 <= len(lines) < 10
    assert all(len(line.split("] ", 1)[1]) <= MAX_PASSAGE_CHARS for line in lines)


def test_empty_query_is_an_input_error() -> None:
    result = run(server_tool(FakeStub()), {"query": "   ", "collection": "c"})
    assert (result.ok, result.as_message_content()) == (False, "error: the query is empty")


def test_invalid_argument_is_the_models_mistake() -> None:
    tool = server_tool(FakeStub(error=FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad collection name")))
    result = run(tool, {"query": "q", "collection": "bad name!"})
    assert result.error == "retrieval rejected the search: bad collection name"
    assert tool.breaker.allow()


def test_service_down_is_a_tool_failure() -> None:
    tool = server_tool(FakeStub(error=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")))
    result = run(tool, {"query": "q", "collection": "c"})
    assert (result.ok, result.error) == (False, "retrieve failed")


def test_registry_serves_retrieve_only_with_an_address() -> None:
    assert "retrieve" not in builtin_registry().names()
    registry = builtin_registry("localhost:1")
    assert registry.names() == ["calculator", "current_time", "retrieve"]
    assert registry.get("retrieve").spec is RETRIEVE
