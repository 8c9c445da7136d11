"""The lexicon's per-category screen (one alternation of a category's features) changes no score: it only skips
the one-by-one search where none of the category's features can match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.safety.detectors import lexicon
from services.safety.detectors.lexicon import _ANY_FEATURE, LEXICON, lexicon_scores

DATA = Path(__file__).resolve().parents[1] / "data"


def _texts() -> list[str]:
    texts = []
    for path in (DATA / "safety_eval.jsonl", DATA / "safety_unseen" / "test.jsonl",
                 DATA / "safety_unseen_v2" / "test.jsonl"):
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return texts


def test_every_category_has_a_screen() -> None:
    assert set(_ANY_FEATURE) == set(LEXICON) and all(p is not None for p in _ANY_FEATURE.values())


@pytest.mark.parametrize("window", [None, 48])
def test_screened_scores_equal_the_feature_by_feature_scores(window: int | None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts()
    if window:  # the output guard's short windows cut phrases apart
        texts = [t[i:i + window] for t in texts for i in range(0, len(t), window)]
    screened = [lexicon_scores(text) for text in texts]
    monkeypatch.setattr(lexicon, "_ANY_FEATURE", dict.fromkeys(LEXICON))  # no screen: every feature is searched
    flagged = 0
    for text, got in zip(texts, screened, strict=True):
        want = lexicon_scores(text)
        assert got == pytest.approx(want, abs=0), text
        flagged += any(v > 0 for v in want.values())
    assert flagged > 100  # the sets exercise the features, not only the screen's no-match path
