"""Client of the Triton `embedder` model over gRPC (tritonclient.grpc.aio), used by the orchestrator's
/v1/embeddings and by the retrieval service. Large inputs are split into requests of at most `batch_size` rows sent
concurrently; Triton's dynamic batcher merges them with other callers' rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from services.common.telemetry import start_triton_call
from services.common.triton_replicas import TritonReplicas
from services.retrieval.embedding_model import DIMENSIONS, TRITON_MODEL


class EmbedderUnavailable(RuntimeError):
    """Triton could not embed (down, model not ready, or it rejected the batch)."""


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: np.ndarray  # [N, 384] float32, unit length
    num_tokens: np.ndarray  # [N] int32, tokens the model read per text ([CLS]/[SEP] included, after truncation)


class EmbeddingClient:
    """`triton_url` may list several Triton replicas: a request that one cannot serve (down, not ready) goes to the
    next, and the one that answered is asked first from then on."""

    def __init__(self, triton_url: str | Sequence[str], model: str = TRITON_MODEL, batch_size: int = 64,
                 timeout_s: float = 30.0) -> None:
        self.replicas = TritonReplicas(triton_url)
        self.model = model
        self.batch_size = batch_size
        self.timeout_s = timeout_s

    async def _one(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        tensor = grpcclient.InferInput("text", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput("embedding"), grpcclient.InferRequestedOutput("num_tokens")]
        call = start_triton_call(self.model, attributes={"sluice.texts": len(texts)})
        try:
            result = await self.replicas.infer(self.model, [tensor], outputs, timeout_s=self.timeout_s, call=call,
                                               retry_on=InferenceServerException)
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
        await self.replicas.close()
