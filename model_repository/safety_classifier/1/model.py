"""Safety classifier (Triton Python backend): text → per-category scores; the scoring lives in services.safety."""

from __future__ import annotations

import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        # Score with the checkout that rendered this repository (its committed head and scorer), not whichever
        # checkout the environment's editable install points at.
        repo_root = config["parameters"].get("repo_root", {}).get("string_value")
        if repo_root and repo_root not in sys.path:
            sys.path.insert(0, repo_root)
        from engine.stub_lifetime import watch_server

        watch_server()  # this stub ends with its tritonserver, however that ends
        from threadpoolctl import threadpool_limits

        # One BLAS/OpenMP thread: the products here are small, and an idle pool thread busy-waits after each call —
        # with two threads each ~2 ms window cost ~25 ms of CPU, mostly spinning (measured).
        threadpool_limits(1)
        from services.safety.categories import CLASSIFIER_CATEGORIES
        from services.safety.scoring import SafetyScorer

        declared = tuple(config["parameters"]["categories"]["string_value"].split(","))
        if declared != CLASSIFIER_CATEGORIES:
            raise ValueError(f"config categories {declared} differ from the scorer's {CLASSIFIER_CATEGORIES}")
        self.width = len(CLASSIFIER_CATEGORIES)
        self.scorer = SafetyScorer()
        self.scorer.score(["warm-up"])
        self.family = pb_utils.MetricFamily(name="sluice_safety_classifier_texts_total", description="Texts scored",
                                            kind=pb_utils.MetricFamily.COUNTER)
        self.texts = self.family.Metric(labels={"model": args["model_name"], "version": args["model_version"]})

    def execute(self, requests: list) -> list:
        # One scorer call for the whole dynamic batch; a request that fails to decode gets its own error.
        texts: list[str] = []
        owners: list[int] = []
        responses: list = [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                values = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
                decoded = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
            except Exception as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"safety_classifier: {exc}"))
                continue
            texts.extend(decoded)
            owners.extend([index] * len(decoded))
        scores = self.scorer.score(texts) if texts else np.zeros((0, self.width), np.float32)
        self.texts.increment(len(texts))
        owner_array = np.asarray(owners)
        for index in range(len(requests)):
            if responses[index] is None:
                rows = scores[owner_array == index]
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("scores", rows)])
        return responses
