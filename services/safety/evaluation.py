"""`sluice eval safety`: precision / recall / F1 per category and benign false-positive rate on
tests/data/safety_eval.jsonl, reported separately for the tuning half (`tune`: detectors and thresholds were fitted
on it) and the held-out half (`holdout`: the figures to quote), plus the issue's targets; latency with --bench.

Prompts go through the input check; outputs stream through the StreamGuard in 4-character chunks. The classifier
is the Triton model's own scorer run in-process (identical numbers), or the Triton model itself with --triton.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import REPO_ROOT
from services.safety.checker import check_messages
from services.safety.classifier_client import Classifier, LocalClassifier, TritonClassifier
from services.safety.policy import SafetyPolicy
from services.safety.stream_guard import StreamGuard
from services.safety.verdict import Action

EVAL_SET = REPO_ROOT / "tests" / "data" / "safety_eval.jsonl"
CHUNK = 4  # characters per streamed chunk, about one token


@dataclass(slots=True)
class Item:
    id: str
    kind: str
    text: str
    labels: frozenset[str]
    split: str


def load(path: Path = EVAL_SET) -> list[Item]:
    items = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(Item(row["id"], row["kind"], row["text"], frozenset(row["labels"]), row["split"]))
    return items


async def predict(classifier: Classifier, policy: SafetyPolicy, item: Item) -> set[str]:
    if item.kind in ("prompt", "passage"):  # a passage is retrieved / tool text inside the conversation
        role = "user" if item.kind == "prompt" else "tool"
        verdict = await check_messages(classifier, policy, [(role, item.text)])
        return set(verdict.triggered)
    guard = StreamGuard(classifier, policy)
    found: set[str] = set()
    for i in range(0, len(item.text), CHUNK):
        decision = await guard.feed(item.text[i:i + CHUNK])
        found |= {f.category for f in decision.findings} | {c.category for c in decision.categories}
        if decision.action is Action.STOP:
            return found
    decision = await guard.finish()
    return found | {f.category for f in decision.findings} | {c.category for c in decision.categories}


def _coarse(labels: set[str] | frozenset[str]) -> set[str]:
    return set(labels) | {"pii" for label in labels if label.startswith("pii.")}


def report(items: list[Item], predictions: list[set[str]]) -> tuple[str, dict[str, dict[str, float]]]:
    categories = sorted({c for item in items for c in _coarse(item.labels)})
    tp, fp, fn = Counter(), Counter(), Counter()
    benign = benign_flagged = 0
    for item, predicted in zip(items, predictions, strict=True):
        gold, got = _coarse(item.labels), _coarse(predicted)
        for category in categories:
            tp[category] += category in gold and category in got
            fp[category] += category not in gold and category in got
            fn[category] += category in gold and category not in got
        if not gold:
            benign += 1
            benign_flagged += bool(got)
    lines = [f"{'category':<28}{'n':>4}{'precision':>11}{'recall':>8}{'F1':>7}"]
    metrics: dict[str, dict[str, float]] = {}
    for category in categories:
        p = tp[category] / (tp[category] + fp[category]) if tp[category] + fp[category] else 1.0
        r = tp[category] / (tp[category] + fn[category]) if tp[category] + fn[category] else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        metrics[category] = {"precision": p, "recall": r, "f1": f1, "n": tp[category] + fn[category]}
        lines.append(f"{category:<28}{tp[category] + fn[category]:>4}{p:>11.3f}{r:>8.3f}{f1:>7.3f}")
    fpr = benign_flagged / benign if benign else 0.0
    metrics["benign"] = {"fpr": fpr, "n": benign}
    lines.append(f"{'benign false-positive rate':<28}{benign:>4}{fpr:>11.3f}  ({benign_flagged} flagged)")
    return "\n".join(lines), metrics


async def evaluate(classifier: Classifier, path: Path = EVAL_SET, verbose: bool = False,
                   splits: tuple[str, ...] = ("tune", "holdout")) -> dict[str, dict[str, dict[str, float]]]:
    items = load(path)
    policy = SafetyPolicy()
    results = {}
    for split in splits:
        chosen = [item for item in items if item.split == split]
        predictions = [await predict(classifier, policy, item) for item in chosen]
        table, metrics = report(chosen, predictions)
        title = "held-out half: the figures to report" if split == "holdout" else "tuning half: rules were fitted here"
        print(f"\n== {split} ({len(chosen)} items; {title}) ==\n{table}")
        if verbose and split == "tune":  # errors are shown for the tuning half only
            for item, got in zip(chosen, predictions, strict=True):
                if _coarse(got) != _coarse(item.labels):
                    print(f"  {item.id}: gold={sorted(item.labels)} got={sorted(got)} :: {item.text[:90]!r}")
        results[split] = metrics
    return results


# The targets, checked on the held-out half.
TARGETS = (("benign false-positive rate", lambda m: m["benign"]["fpr"], "<", 0.02),
           ("PII recall", lambda m: m["pii"]["recall"], ">=", 0.9),
           ("toxicity recall", lambda m: m["toxicity"]["recall"], ">=", 0.9))


def check_targets(metrics: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    for name, get, op, bound in TARGETS:
        value = get(metrics)
        ok = value < bound if op == "<" else value >= bound
        lines.append(f"{'met' if ok else 'MISSED':>6}  {name} {value:.3f} (target {op} {bound})")
    return lines


def main(triton: str | None, verbose: bool, bench_address: str | None) -> int:
    async def run() -> int:
        classifier: Classifier = TritonClassifier(triton) if triton else LocalClassifier()
        try:
            results = await evaluate(classifier, verbose=verbose)
        finally:
            await classifier.close()
        print("\n== targets (held-out half) ==\n" + "\n".join(check_targets(results["holdout"])))
        if bench_address:
            from services.bench.safety_bench import format_report, measure

            print(f"\n== latency via {bench_address} (sluice bench safety) ==")
            print(format_report(await measure(bench_address, triton_url=triton)))
        return 0

    return asyncio.run(run())
