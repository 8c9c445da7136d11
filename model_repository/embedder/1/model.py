"""Triton Python backend: texts → unit-length all-MiniLM-L6-v2 embeddings [384] and token counts (for usage).

All rows of all requests in a dynamic batch are encoded together; a request whose text is not valid UTF-8 fails alone.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.stub_lifetime import watch_server  # noqa: E402
from services.retrieval.embedding_model import model_dir  # noqa: E402
from services.retrieval.encoder import SentenceEncoder  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        watch_server()  # this stub ends with its tritonserver, however that ends
        config = json.loads(args["model_config"])
        threads = int(config["parameters"].get("torch_threads", {}).get("string_value") or 0)
        self.encoder = SentenceEncoder(model_dir(), threads=threads or None)
        self.encoder.encode(["warm up"])  # the first forward pass is several times slower than the rest
        # The family must outlive its metrics, so both are kept.
        self.family = pb_utils.MetricFamily(name="sluice_embedder_texts_total", description="Texts embedded",
                                            kind=pb_utils.MetricFamily.COUNTER)
        self.rows = self.family.Metric(labels={"model": args["model_name"], "version": args["model_version"]})

    def execute(self, requests: list) -> list:
        texts: list[str] = []
        spans: list[tuple[int, int] | pb_utils.TritonError] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            try:
                decoded = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]
            except UnicodeDecodeError as exc:
                spans.append(pb_utils.TritonError(f"embedder: text is not UTF-8: {exc}"))
                continue
            spans.append((len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        vectors, lengths = self.encoder.encode(texts) if texts else (np.zeros((0, 384), np.float32), np.zeros(0))
        self.rows.increment(len(texts))
        responses = []
        for span in spans:
            if isinstance(span, pb_utils.TritonError):
                responses.append(pb_utils.InferenceResponse(error=span))
                continue
            start, end = span
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("embedding", vectors[start:end]),
                pb_utils.Tensor("num_tokens", lengths[start:end].astype(np.int32).reshape(-1, 1)),
            ]))
        return responses
