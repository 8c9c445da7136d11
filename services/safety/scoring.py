"""The safety classifier's scoring, shared by the Triton model (model_repository/safety_classifier) and local use.

`SafetyScorer` is what is served: per category the higher of the learned head's calibrated score
(learned_head.py) and the hand-written detectors' (`RuleScorer`, kept for the exact phrasings they were written for;
the head's thresholds were chosen with them switched on).

Toxicity is alt-profanity-check's trained model (TF-IDF + a calibrated linear SVM), evaluated through a flattened
copy of its weights: sklearn's `CalibratedClassifierCV.predict_proba` spends ~14 ms per call on input validation
for five tiny linear models, the arithmetic itself takes microseconds. `ToxicityModel` checks at load time that
the fast path reproduces `predict_prob` on probe sentences and falls back to the library if it does not.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from services.safety.categories import CLASSIFIER_CATEGORIES
from services.safety.detectors.lexicon import lexicon_scores
from services.safety.detectors.target import has_target

log = logging.getLogger(__name__)

_PROBES = ("you are a stupid idiot", "kill the process and restart it", "what a lovely day",
           "go to hell you worthless piece of shit", "")
_LEET = str.maketrans({"@": "a", "$": "s", "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"})
_OBFUSCATED = re.compile(r"\b\w*[@$0-9*]\w*\b")
# Profanity with nobody to aim at ("this damn printer") is swearing, not abuse: its score is scaled by this factor,
# which keeps it below any toxicity threshold above 0.7 (the default is 0.8). Chosen on the tuning split.
UNTARGETED_WEIGHT = 0.7


class ToxicityModel:
    def __init__(self) -> None:
        from profanity_check import profanity_check as library

        self._library = library
        self.vectorizer = library.vectorizer
        self.fast = self._flatten(library.model) and self._index_vocabulary(self.vectorizer)
        if self.fast:
            expected = library.predict_prob(list(_PROBES))
            got = self.predict(list(_PROBES))
            if not np.allclose(expected, got, atol=1e-6):
                log.warning("flattened toxicity model disagrees with predict_prob; using the library")
                self.fast = False

    def _flatten(self, model: object) -> bool:
        try:
            calibrated = model.calibrated_classifiers_  # type: ignore[attr-defined]
            self._coef = np.stack([c.estimator.coef_.reshape(-1) for c in calibrated]).T  # [V, K]
            self._intercept = np.array([float(np.ravel(c.estimator.intercept_)[0]) for c in calibrated])
            self._a = np.array([float(c.calibrators[0].a_) for c in calibrated])
            self._b = np.array([float(c.calibrators[0].b_) for c in calibrated])
            return calibrated[0].method == "sigmoid" and list(model.classes_) == [0, 1]  # type: ignore[attr-defined]
        except (AttributeError, IndexError, ValueError):
            return False

    def _index_vocabulary(self, vectorizer: object) -> bool:
        """TF-IDF by hand: sklearn's `transform` spends most of a short text's time validating its input."""
        try:
            params = vectorizer.get_params()  # type: ignore[attr-defined]
            self._analyze = vectorizer.build_analyzer()  # type: ignore[attr-defined]
            self._vocabulary: dict[str, int] = vectorizer.vocabulary_  # type: ignore[attr-defined]
            self._idf = np.asarray(vectorizer.idf_, dtype=np.float64)  # type: ignore[attr-defined]
        except AttributeError:
            return False
        return (params.get("norm") == "l2" and params.get("use_idf") and not params.get("sublinear_tf")
                and not params.get("binary"))

    def _decision(self, text: str) -> np.ndarray:
        """The K calibrated models' decision values for one text: l2-normalised tf·idf over its known words."""
        counts: dict[int, int] = {}
        for token in self._analyze(text):
            index = self._vocabulary.get(token)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        if not counts:
            return self._intercept.copy()
        indices = np.fromiter(counts, dtype=np.intp, count=len(counts))
        weights = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[indices]
        weights /= np.sqrt(weights @ weights)
        return weights @ self._coef[indices] + self._intercept

    def predict(self, texts: list[str]) -> np.ndarray:
        """P(offensive) per text, [N]."""
        if not texts:
            return np.zeros(0)
        if not self.fast:
            return np.asarray(self._library.predict_prob(texts), dtype=np.float64)
        decision = np.stack([self._decision(t) for t in texts])  # [N, K]
        positive = 1.0 / (1.0 + np.exp(self._a * decision + self._b))  # sklearn's sigmoid calibration
        return positive.mean(axis=1)


class RuleScorer:
    """The hand-written detectors (v1): text → scores in CLASSIFIER_CATEGORIES order (0 for categories they do
    not cover). Toxicity is the profanity model's probability (discounted for
    text that targets no one, see detectors/target.py) or the harassment phrases', whichever is higher."""

    def __init__(self) -> None:
        self.toxicity = ToxicityModel()

    def score(self, texts: list[str]) -> np.ndarray:
        """[N, C] float32 scores in CLASSIFIER_CATEGORIES order."""
        out = np.zeros((len(texts), len(CLASSIFIER_CATEGORIES)), dtype=np.float32)
        if not texts:
            return out
        # Score de-obfuscated text too ("sh1t", "@ss"), keeping the higher probability.
        plain = self.toxicity.predict(texts)
        deleeted = [_OBFUSCATED.sub(lambda m: m.group(0).translate(_LEET), t) for t in texts]
        changed = [i for i, (a, b) in enumerate(zip(texts, deleeted, strict=True)) if a != b]
        if changed:
            plain[changed] = np.maximum(plain[changed], self.toxicity.predict([deleeted[i] for i in changed]))
        for row, text in enumerate(texts):
            if not (has_target(text) or has_target(deleeted[row])):
                plain[row] *= UNTARGETED_WEIGHT
            lexicon = lexicon_scores(text)
            for col, category in enumerate(CLASSIFIER_CATEGORIES):
                value = lexicon.get(category, 0.0)
                if category == "toxicity":
                    value = max(value, float(plain[row]))
                out[row, col] = value
        return out


class SafetyScorer:
    """Served scores: max(learned head, rules) per category, in CLASSIFIER_CATEGORIES order."""

    def __init__(self, head_dir: Path | None = None) -> None:
        from services.safety.learned_head import HEAD_DIR, LearnedSafetyHead
        from services.safety.policy import DEFAULT_THRESHOLDS

        self.rules = RuleScorer()
        self.head = LearnedSafetyHead(head_dir or HEAD_DIR)
        if self.head.categories != CLASSIFIER_CATEGORIES:
            raise ValueError(f"head categories {self.head.categories} differ from {CLASSIFIER_CATEGORIES}")
        self._targets = np.array([DEFAULT_THRESHOLDS[c] for c in CLASSIFIER_CATEGORIES], dtype=np.float32)

    def score(self, texts: list[str]) -> np.ndarray:
        """[N, C] float32."""
        if not texts:
            return np.zeros((0, len(CLASSIFIER_CATEGORIES)), dtype=np.float32)
        return np.maximum(self.rules.score(texts), self.head.scores(texts, self._targets))
