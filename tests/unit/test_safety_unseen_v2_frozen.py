"""The second frozen safety test set (written before v3's training data and model) is unchanged."""

from __future__ import annotations

import hashlib
import json

from services.common.settings import REPO_ROOT
from services.safety.categories import ALL_CATEGORIES, CLASSIFIER_CATEGORIES, PII_CATEGORIES

FROZEN_V2 = REPO_ROOT / "tests" / "data" / "safety_unseen_v2" / "test.jsonl"
SHA256 = "efd1023dcc3917482f1045a2d2bfd81166ee08dd2b0a262f2a37b1e1578a4b4f"


def test_frozen_v2_test_set_hash() -> None:
    assert hashlib.sha256(FROZEN_V2.read_bytes()).hexdigest() == SHA256


def test_frozen_v2_test_set_covers_every_category() -> None:
    rows = [json.loads(line) for line in FROZEN_V2.read_text().splitlines() if line.strip()]
    labels = {label for row in rows for label in row["labels"]}
    assert len(rows) == 413 and labels <= set(ALL_CATEGORIES)
    assert {*CLASSIFIER_CATEGORIES, *PII_CATEGORIES, "prompt_injection"} <= labels
    assert sum(not row["labels"] for row in rows) == 201  # benign look-alikes
