"""The frozen safety test set is unchanged: its figures mean something only if nobody edits it after the fact."""

from __future__ import annotations

import hashlib

from services.common.settings import REPO_ROOT

FROZEN = REPO_ROOT / "tests" / "data" / "safety_unseen" / "test.jsonl"
SHA256 = "10c78e1cd12f435683ba22b153c663793c385f6f6b35382b7d801ca190b4d04f"


def test_frozen_test_set_hash() -> None:
    assert hashlib.sha256(FROZEN.read_bytes()).hexdigest() == SHA256

