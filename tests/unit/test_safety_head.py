"""The learned safety head: the numpy forward pass served by Triton equals the torch one it was trained as, the
calibration and threshold choice do what they promise, and the generated corpus covers every category."""

from __future__ import annotations

import json

import numpy as np
import torch

from pipelines.safety_classifier.corpus import generate
from pipelines.safety_classifier.train import Head, choose_thresholds
from services.common.settings import REPO_ROOT
from services.safety.categories import CLASSIFIER_CATEGORIES
from services.safety.learned_head import HEAD_DIR, HeadWeights, calibrate, fold_taps, folded_logits, head_logits


def test_numpy_forward_matches_the_trained_torch_module() -> None:
    torch.manual_seed(0)
    model = Head(dim=8, hidden=6, hidden2=5, classes=3).eval()
    weights = HeadWeights(**{k: v.detach().numpy() for k, v in model.export().items()})
    texts = [np.random.default_rng(i).normal(size=(n, 8)).astype(np.float32) for i, n in enumerate((1, 4, 7))]
    x = torch.zeros((3, 7, 8))
    mask = torch.zeros((3, 7))
    for i, t in enumerate(texts):  # padded batch, as in training
        x[i, :len(t)] = torch.from_numpy(t)
        mask[i, :len(t)] = 1
    with torch.inference_mode():
        expected = model(x, mask).numpy()
    np.testing.assert_allclose(head_logits(weights, texts), expected, atol=1e-5)


def test_folded_fast_path_equals_the_reference_forward_pass() -> None:
    """What is served (taps folded into the vocabulary, a gather per token) is `head_logits` on the embeddings."""
    torch.manual_seed(1)
    model = Head(dim=8, hidden=6, hidden2=5, classes=3).eval()
    weights = HeadWeights(**{k: v.detach().numpy() for k, v in model.export().items()})
    vocabulary = np.random.default_rng(2).normal(size=(50, 8)).astype(np.float32)
    ids = [np.asarray(i, dtype=np.intp) for i in ([7], [1, 2], [3, 49, 0, 3, 3, 12, 8])]
    reference = head_logits(weights, [vocabulary[i] for i in ids])
    np.testing.assert_allclose(folded_logits(weights, fold_taps(weights, vocabulary), ids), reference, atol=1e-5)


def test_calibration_sends_the_chosen_threshold_to_the_policy_threshold() -> None:
    chosen, target = np.array([0.2, 0.9], np.float32), np.array([0.5, 0.8], np.float32)
    p = np.array([[0.0, 0.0], [0.2, 0.9], [0.19, 0.91], [1.0, 1.0]], np.float32)
    s = calibrate(p, chosen, target)
    np.testing.assert_allclose(s[[0, 1, 3]], [[0, 0], [0.5, 0.8], [1, 1]], atol=1e-6)
    assert s[2, 0] < 0.5 and s[2, 1] > 0.8


def test_thresholds_keep_the_benign_budget_and_catch_what_it_allows() -> None:
    rng = np.random.default_rng(1)
    y = np.zeros((1000, 2), np.float32)
    y[:200, 0] = 1
    y[200:400, 1] = 1
    p = rng.uniform(0, 0.6, size=(1000, 2)).astype(np.float32)
    p[:200, 0] += 0.4  # unsafe rows score higher in their own category
    p[200:400, 1] += 0.4
    t = choose_thresholds(p, y, benign_budget=0.02)
    benign = y.sum(axis=1) == 0
    assert (p[benign] >= t).any(axis=1).mean() <= 0.02
    assert (p[~benign] >= t).any(axis=1).mean() > 0.5
    already = np.zeros(1000, bool)
    already[benign.nonzero()[0][:12]] = True  # the rules already flag 2% of benign rows: nothing left to spend
    t2 = choose_thresholds(p, y, benign_budget=0.02, already=already)
    assert (already | (p >= t2).any(axis=1))[benign].mean() <= 0.02 and (t2 >= t).all()


def test_corpus_covers_every_category_and_holds_out_whole_templates() -> None:
    rows = generate(seed=3, per_category=60, benign=400)
    labels = {label for row in rows for label in row.labels}
    assert labels == set(CLASSIFIER_CATEGORIES)
    assert {row.fold for row in rows} == {0, 1, 2}
    assert generate(seed=3, per_category=60, benign=400) == rows  # deterministic


def test_committed_head_matches_the_categories() -> None:
    meta = json.loads((HEAD_DIR / "head.json").read_text())
    assert tuple(meta["categories"]) == CLASSIFIER_CATEGORIES
    assert all(0 < meta["thresholds"][c] < 1 for c in CLASSIFIER_CATEGORIES)


def test_training_rows_repeat_no_frozen_test_text() -> None:
    """The frozen sets measure text the head has never seen: no generated row may be one of their texts."""
    frozen = {json.loads(line)["text"].strip().lower()
              for name in ("safety_unseen", "safety_unseen_v2")
              for line in (REPO_ROOT / "tests" / "data" / name / "test.jsonl").read_text().splitlines() if line}
    assert not [row.text for row in generate() if row.text.strip().lower() in frozen]
