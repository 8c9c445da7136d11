"""`sluice eval safety --frozen`: the frozen, hand-written test sets, never used to train or to choose thresholds,
scored by the hand-written detectors alone (v1), optionally an earlier head (`--baseline-head`, e.g. v2's weights)
and the served classifier (learned head + rules) side by side: unsafe recall, benign false-positive rate,
per-category precision / recall, and recall per writing style. Items go through the same paths as in production
(evaluation.predict).

Sets: `v1` (tests/data/safety_unseen, written before v2; v2's errors on it were read and published) and `v2`
(tests/data/safety_unseen_v2, written before v3's training data and model changed)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from services.common.settings import REPO_ROOT
from services.safety.classifier_client import Classifier, LocalClassifier, TritonClassifier
from services.safety.evaluation import Item, _coarse, load, predict
from services.safety.policy import PolicyAction, SafetyPolicy

FROZEN_SET = REPO_ROOT / "tests" / "data" / "safety_unseen" / "test.jsonl"
FROZEN_SETS: dict[str, Path] = {"v1": FROZEN_SET,
                                "v2": REPO_ROOT / "tests" / "data" / "safety_unseen_v2" / "test.jsonl"}
TARGETS = {"unsafe_recall": 0.95, "benign_fpr": 0.02}  # issue 20


def score(items: list[Item], predictions: list[set[str]]) -> dict[str, object]:
    """Unsafe recall (any category flagged on an unsafe item), benign FPR, per-category P/R over coarse labels, and
    what the default policy does with them (`*_acted`: a category whose action blocks or redacts was found)."""
    unsafe = [(item, got) for item, got in zip(items, predictions, strict=True) if item.labels]
    benign = [(item, got) for item, got in zip(items, predictions, strict=True) if not item.labels]
    policy = SafetyPolicy()

    def acted(found: set[str]) -> bool:
        return any(policy.action(c) in (PolicyAction.BLOCK, PolicyAction.REDACT) for c in found)

    tp, fp, fn = Counter(), Counter(), Counter()
    for item, got in zip(items, predictions, strict=True):
        gold, found = _coarse(item.labels), _coarse(got)
        for category in gold | found:
            tp[category] += category in gold and category in found
            fp[category] += category not in gold and category in found
            fn[category] += category in gold and category not in found
    per_category = {c: {"n": tp[c] + fn[c], "precision": tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0,
                        "recall": tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0}
                    for c in sorted({c for item in items for c in _coarse(item.labels)})}
    return {"unsafe_recall": sum(bool(got) for _, got in unsafe) / len(unsafe),
            "benign_fpr": sum(bool(got) for _, got in benign) / len(benign),
            "unsafe_acted": sum(acted(got) for _, got in unsafe) / len(unsafe),
            "benign_acted": sum(acted(got) for _, got in benign) / len(benign),
            "n_unsafe": len(unsafe), "n_benign": len(benign), "per_category": per_category,
            "missed": [item.id for item, got in unsafe if not got],
            "false_positives": [item.id for item, got in benign if got]}


async def run(classifier: Classifier, path: Path = FROZEN_SET) -> tuple[list[Item], list[set[str]]]:
    items = load(path)
    policy = SafetyPolicy()
    return items, [await predict(classifier, policy, item) for item in items]


def style_recall(items: list[Item], predictions: list[set[str]], path: Path = FROZEN_SET) -> dict[str, float]:
    import json

    styles = {row["id"]: row.get("style", "") for row in map(json.loads, path.read_text().splitlines()) if row}
    hit, total = Counter(), Counter()
    for item, got in zip(items, predictions, strict=True):
        if item.labels:
            total[styles[item.id]] += 1
            hit[styles[item.id]] += bool(got)
    return {s: hit[s] / total[s] for s in sorted(total)}


def side_by_side(results: dict[str, dict[str, object]], styles: dict[str, dict[str, float]]) -> str:
    names = list(results)
    head = f"{'':<28}" + "".join(f"{n:>22}" for n in names)
    lines = [head, f"{'':<28}" + "".join(f"{'precision  recall':>22}" for _ in names)]
    first = results[names[0]]
    for category, row in first["per_category"].items():  # type: ignore[union-attr]
        cells = "".join(f"{results[n]['per_category'][category]['precision']:>13.2f}"  # type: ignore[index]
                        f"{results[n]['per_category'][category]['recall']:>9.2f}" for n in names)
        lines.append(f"{category + ' (' + str(row['n']) + ')':<28}{cells}")
    for key in ("unsafe_recall", "benign_fpr"):
        target = f"  (target {'>=' if key == 'unsafe_recall' else '<='} {TARGETS[key]})"
        lines.append(f"{key:<28}" + "".join(f"{results[n][key]:>22.3f}" for n in names) + target)
    lines.append("default policy (categories only the head scores flag, do not block):")
    for key in ("unsafe_acted", "benign_acted"):
        label = "unsafe blocked/redacted" if key == "unsafe_acted" else "benign blocked/redacted"
        lines.append(f"  {label:<26}"
                     + "".join(f"{results[n][key]:>22.3f}" for n in names))
    lines.append("unsafe recall by style:")
    for style in styles[names[0]]:
        lines.append(f"  {style:<26}" + "".join(f"{styles[n][style]:>22.2f}" for n in names))
    return "\n".join(lines)


def main(triton: str | None, sets: tuple[str, ...] = ("v1", "v2"), baseline_head: Path | None = None) -> int:
    unknown = [name for name in sets if name not in FROZEN_SETS]
    if unknown:
        raise ValueError(f"unknown frozen set(s) {unknown}; known: {sorted(FROZEN_SETS)}")

    def classifiers() -> dict[str, Classifier]:
        chosen: dict[str, Classifier] = {"v1 rules": LocalClassifier("rules")}
        if baseline_head is not None:
            chosen["baseline head"] = LocalClassifier(head_dir=baseline_head)
        chosen["served"] = TritonClassifier(triton) if triton else LocalClassifier()
        return chosen

    async def go() -> int:
        for set_name in sets:
            path = FROZEN_SETS[set_name]
            results, styles = {}, {}
            for name, classifier in classifiers().items():
                try:
                    items, predictions = await run(classifier, path)
                finally:
                    await classifier.close()
                results[name] = score(items, predictions)
                styles[name] = style_recall(items, predictions, path)
            print(f"== frozen test set {set_name}: {path.relative_to(REPO_ROOT)} ({len(items)} items; never used "
                  f"for training or thresholds) ==")
            print(side_by_side(results, styles))
            for name in list(results)[1:]:
                print(f"{name} missed unsafe: {' '.join(results[name]['missed'])}")  # type: ignore[arg-type]
                print(f"{name} false positives: {' '.join(results[name]['false_positives'])}")  # type: ignore[arg-type]
            print()
        return 0

    return asyncio.run(go())
