"""Client of the Triton `embedder` model over gRPC (tritonclient.grpc.aio), used by the orchestrator's
/v1/embeddings and by the retrieval service. Large inputs are split into requests of at most `batch_size` rows sent
concurrently; Triton's dynamic batcher merges them with other callers' rows."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from services.common.telemetry import start_triton_call
from services.retrieval.embedding_model import DIMENSIONS, TRITON_MODEL


class EmbedderUnavailable(RuntimeError):
    """Triton could not embed (down, model not ready, or it rejected the batch)."""


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: np.ndarray  # [N, 384] float32, unit length
    num_tokens: np.ndarray  # [N] int32, tokens the model read per text ([CLS]/[SEP] included, after truncation)


class EmbeddingClient:
    def __init__(self, triton_url: str, model: str = TRITON_MODEL, batch_size: int = 64,
                 timeout_s: float = 30.0) -> None:
        self.url = triton_url
        self.model = model
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self._client: grpcclient.InferenceServerClient | None = None

    def _get(self) -> grpcclient.InferenceServerClient:
        # Created lazily, inside the event loop that will use it.
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    async def _one(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        tensor = grpcclient.InferInput("text", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput("embedding"), grpcclient.InferRequestedOutput("num_tokens")]
        call = start_triton_call(self.model, attributes={"sluice.texts": len(texts)})
        try:
            result = await self._get().infer(self.model, [tensor], outputs=outputs, client_timeout=self.timeout_s,
                                             request_id=call.request_id, headers=call.headers)
        except InferenceServerException as exc:
            call.fail(exc)
            raise EmbedderUnavailable(f"embedder: {exc.message() or exc}") from exc
        finally:
            call.end()
        return result.as_numpy("embedding"), result.as_numpy("num_tokens").reshape(-1)

    async def embed(self, texts: list[str]) -> Embeddings:
        if not texts:
            return Embeddings(np.zeros((0, DIMENSIONS), np.float32), np.zeros(0, np.int32))
        parts = await asyncio.gather(*(self._one(texts[i:i + self.batch_size])
                                       for i in range(0, len(texts), self.batch_size)))
        return Embeddings(np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False),
                          np.concatenate([p[1] for p in parts]).astype(np.int32, copy=False))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
