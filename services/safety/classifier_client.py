"""Clients for the safety classifier: Triton's `safety_classifier` model, or the same scorer in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput

from services.common.telemetry import start_triton_call
from services.common.triton_replicas import TritonReplicas
from services.safety.categories import CLASSIFIER_CATEGORIES

MODEL_NAME = "safety_classifier"


class ClassifierUnavailable(RuntimeError):
    """The classifier could not answer (down, overloaded, timed out)."""


class Classifier(Protocol):
    async def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text, a score in [0, 1] for each of CLASSIFIER_CATEGORIES."""
        ...

    async def close(self) -> None: ...


def _rows(matrix: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(CLASSIFIER_CATEGORIES, map(float, row), strict=True)) for row in matrix]


class TritonClassifier:
    """`url` may list several Triton replicas: a call that gets no answer from one is sent to the next, and the one
    that answered is asked first from then on."""

    def __init__(self, url: str | Sequence[str], model_name: str = MODEL_NAME, timeout_s: float = 2.0) -> None:
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.replicas = TritonReplicas(url)

    async def scores(self, texts: list[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        tensor = InferInput("text", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_))
        call = start_triton_call(self.model_name, attributes={"sluice.texts": len(texts)})
        try:
            result = await self.replicas.infer(self.model_name, [tensor], [InferRequestedOutput("scores")],
                                               timeout_s=self.timeout_s, call=call)
        except Exception as exc:  # InferenceServerException, grpc errors, timeouts: all mean "no answer"
            call.fail(exc)
            raise ClassifierUnavailable(f"{self.model_name}: {type(exc).__name__}: {exc}") from exc
        finally:
            call.end()
        matrix = result.as_numpy("scores")
        if matrix is None or matrix.shape != (len(texts), len(CLASSIFIER_CATEGORIES)):
            raise ClassifierUnavailable(f"{self.model_name}: unexpected output shape")
        return _rows(matrix)

    async def is_ready(self) -> bool:
        return await self.replicas.model_ready(self.model_name)

    async def close(self) -> None:
        await self.replicas.close()


class LocalClassifier:
    """The Triton model's scorer in this process: for evaluation and unit tests (identical numbers).
    `scorer="rules"` scores with the hand-written detectors alone (v1), for side-by-side figures; `head_dir` serves
    another head's weights (an earlier version, for side-by-side figures)."""

    def __init__(self, scorer: str = "served", head_dir: Path | None = None) -> None:
        from services.safety.scoring import RuleScorer, SafetyScorer

        if scorer not in ("served", "rules"):
            raise ValueError(f"scorer must be 'served' or 'rules', got {scorer!r}")
        self._scorer = SafetyScorer(head_dir) if scorer == "served" else RuleScorer()

    async def scores(self, texts: list[str]) -> list[dict[str, float]]:
        return _rows(self._scorer.score(texts)) if texts else []

    def scores_sync(self, texts: list[str]) -> list[dict[str, float]]:
        return _rows(self._scorer.score(texts)) if texts else []

    async def close(self) -> None:
        await asyncio.sleep(0)
