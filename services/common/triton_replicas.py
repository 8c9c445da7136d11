"""One Triton inference call over several replicas of the same model repository: a replica that gives no answer is
skipped for the next, and the one that answered is asked first from then on. Used by the clients of the small
models (the safety classifier, the embedder); LLM streams have their own prefix-affinity routing (replicated_llm)."""

from __future__ import annotations

from collections.abc import Sequence

import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult

from services.common.telemetry import TritonCall


class TritonReplicas:
    def __init__(self, urls: str | Sequence[str]) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("at least one Triton URL is needed")
        self._clients: dict[str, triton_aio.InferenceServerClient] = {}
        self._preferred = 0

    def _client(self, url: str) -> triton_aio.InferenceServerClient:
        # Created lazily, inside the event loop that will use it.
        if url not in self._clients:
            self._clients[url] = triton_aio.InferenceServerClient(url)
        return self._clients[url]

    async def infer(self, model: str, inputs: list[InferInput], outputs: list[InferRequestedOutput], *,
                    timeout_s: float, call: TritonCall,
                    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> InferResult:
        """The first answer, trying each replica once from the preferred one; the last replica's error is raised.
        An error that is not a `retry_on` is raised at once."""
        order = [*range(self._preferred, len(self.urls)), *range(self._preferred)]
        for attempt, index in enumerate(order):
            try:
                result = await self._client(self.urls[index]).infer(
                    model, inputs, outputs=outputs, client_timeout=timeout_s, request_id=call.request_id,
                    headers=call.headers)
            except retry_on:
                if attempt == len(order) - 1:
                    raise
                continue
            self._preferred = index
            return result
        raise AssertionError("unreachable: the loop returns or raises")

    async def model_ready(self, model: str) -> bool:
        """Whether any replica reports `model` ready."""
        for url in self.urls:
            try:
                if await self._client(url).is_model_ready(model):
                    return True
            except Exception:
                continue
        return False

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
