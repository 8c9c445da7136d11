"""The toxicity model's hand-written TF-IDF path gives the library's own probabilities."""

from __future__ import annotations

import json

import numpy as np

from services.common.settings import REPO_ROOT
from services.safety.scoring import ToxicityModel


def test_fast_path_reproduces_predict_prob_on_the_evaluation_texts() -> None:
    from profanity_check import profanity_check as library

    model = ToxicityModel()
    assert model.fast  # the fast path is the one in use (it falls back to the library only on a mismatch)
    lines = (REPO_ROOT / "tests" / "data" / "safety_eval.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    texts += ["", "   ", "!!!", "the and of"]  # no known words at all
    assert np.allclose(model.predict(texts), library.predict_prob(texts), atol=1e-9, rtol=0)
