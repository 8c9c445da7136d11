"""The safety evaluation set and the issue's quality targets on its held-out half (the in-process scorer is the
Triton model's own code, so these are the served numbers)."""

from __future__ import annotations

import asyncio
from collections import Counter

from services.safety.categories import ALL_CATEGORIES
from services.safety.classifier_client import LocalClassifier
from services.safety.evaluation import check_targets, evaluate, load


def test_the_set_is_large_labelled_and_split() -> None:
    items = load()
    assert len(items) >= 300 and len({item.id for item in items}) == len(items)
    assert all(item.kind in ("prompt", "output", "passage") and item.split in ("tune", "holdout") for item in items)
    assert all(set(item.labels) <= set(ALL_CATEGORIES) for item in items)
    per_split = Counter((item.split, bool(item.labels)) for item in items)
    assert per_split[("holdout", False)] >= 100 and per_split[("tune", False)] >= 100  # benign controls
    covered = {label for item in items if item.split == "holdout" for label in item.labels}
    # deny lists are per tenant, tested elsewhere; the Llama Guard categories added with the learned classifier (v2)
    # are covered by the frozen set in tests/data/safety_unseen instead
    v2_only = {"sex_crimes", "defamation", "specialized_advice", "privacy", "intellectual_property", "elections",
               "code_interpreter_abuse"}
    assert covered == set(ALL_CATEGORIES) - {"deny_list"} - v2_only


def test_held_out_targets_are_met(capsys) -> None:
    """The v1 detectors' targets on this set (the v2 learned head's figures on it are in EVALUATION.md)."""
    results = asyncio.run(evaluate(LocalClassifier("rules"), splits=("holdout",)))
    held_out = results["holdout"]
    assert held_out["benign"]["fpr"] < 0.02
    assert held_out["pii"]["recall"] >= 0.9 and held_out["toxicity"]["recall"] >= 0.9
    assert all(line.lstrip().startswith("met") for line in check_targets(held_out))
    printed = capsys.readouterr().out
    assert "precision" in printed and "benign false-positive rate" in printed
