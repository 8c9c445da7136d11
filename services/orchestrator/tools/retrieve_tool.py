"""The `retrieve` server-side tool: searches one collection through the retrieval service's Search RPC, as the
request's tenant, and returns the best passages as `[document_id#chunk_id] text` lines.

Tools run in worker threads (see registry.ServerTool), so this uses a sync gRPC channel. The tenant comes from the
`request_tenant` context variable, which the facade sets per request; `asyncio.to_thread` carries it into the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.orchestrator.tools.builtin import ToolInputError
from services.orchestrator.tools.spec import ToolSpec

TENANT_HEADER = "x-sluice-tenant"
DEFAULT_TOP_K = 4
MAX_TOP_K = 10
MAX_PASSAGE_CHARS = 400  # one passage line, after whitespace is collapsed
MAX_OUTPUT_CHARS = 2000  # all lines together
NO_RESULTS = "no passages found"

request_tenant: ContextVar[str | None] = ContextVar("sluice_tool_tenant", default=None)

RETRIEVE = ToolSpec.checked("retrieve", "Search a document collection and return the most relevant passages.", {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "collection": {"type": "string", "minLength": 1},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": DEFAULT_TOP_K},
    },
    "required": ["query", "collection"],
})


def format_hits(hits: Any) -> str:
    lines: list[str] = []
    used = 0
    for hit in hits:
        text = " ".join(hit.text.split())
        if len(text) > MAX_PASSAGE_CHARS:
            text = text[:MAX_PASSAGE_CHARS - 1] + "…"
        line = f"[{hit.document_id}#{hit.chunk_id}] {text}"
        if used + len(line) + 1 > MAX_OUTPUT_CHARS:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines) if lines else NO_RESULTS


class RetrieveTool:
    """Callable as a ServerTool function. `stub_factory` builds the Retrieval stub lazily (tests pass a fake)."""

    def __init__(self, address: str | None = None, timeout_s: float = 4.5,
                 stub_factory: Callable[[], Any] | None = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._stub_factory = stub_factory or self._grpc_stub
        self._stub: Any = None
        self._lock = threading.Lock()

    def _grpc_stub(self) -> retrieval_pb2_grpc.RetrievalStub:
        if not self.address:
            raise RuntimeError("no retrieval address configured")
        return retrieval_pb2_grpc.RetrievalStub(grpc.insecure_channel(self.address))

    def stub(self) -> Any:
        with self._lock:
            if self._stub is None:
                self._stub = self._stub_factory()
            return self._stub

    def __call__(self, arguments: dict[str, Any]) -> str:
        query = arguments["query"].strip()
        collection = arguments["collection"].strip()
        top_k = arguments.get("top_k", DEFAULT_TOP_K)
        if not query:
            raise ToolInputError("the query is empty")
        if not collection:
            raise ToolInputError("the collection is empty")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ToolInputError(f"top_k must be an integer from 1 to {MAX_TOP_K}")
        tenant = request_tenant.get()
        metadata = ((TENANT_HEADER, tenant),) if tenant else ()
        request = retrieval_pb2.SearchRequest(query=query, collection=collection, k=top_k)
        try:
            reply = self.stub().Search(request, metadata=metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                # the model named a bad collection or query: its mistake, not a service failure
                details = exc.details() if callable(getattr(exc, "details", None)) else ""
                raise ToolInputError(f"retrieval rejected the search: {details or code.name}") from None
            raise
        return format_hits(list(reply.hits)[:top_k])
