"""The frozen safety test set is unchanged: its figures mean something only if nobody edits it after the fact."""

from __future__ import annotations

import hashlib
import json

from services.common.settings import REPO_ROOT
from services.safety.categories import ALL_CATEGORIES, CLASSIFIER_CATEGORIES

FROZEN = REPO_ROOT / "tests" / "data" / "safety_unseen" / "test.jsonl"
SHA256 = "10c78e1cd12f435683ba22b153c663793c385f6f6b35382b7d801ca190b4d04f"


def test_frozen_test_set_hash() -> None:
    assert hashlib.sha256(FROZEN.read_bytes()).hexdigest() == SHA256



def test_frozen_test_set_covers_every_classifier_category() -> None:
    rows = [json.loads(line) for line in FROZEN.read_text().splitlines() if line.strip()]
    labels = {label for row in rows for label in row["labels"]}
    assert len(rows) == 351 and labels <= set(ALL_CATEGORIES)
    assert set(CLASSIFIER_CATEGORIES) <= labels
    assert sum(not row["labels"] for row in rows) == 177  # benign look-alikes
