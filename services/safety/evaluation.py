"""`sluice eval safety`: precision / recall / F1 per category and benign false-positive rate on
tests/data/safety_eval.jsonl, reported separately for the tuning half and the held-out half; plus latency.

Prompts go through the input check; outputs stream through the StreamGuard in 4-character chunks. The classifier
is the Triton model's own scorer run in-process (identical numbers), or the Triton model itself with --triton.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
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
        print(f"\n== {split} half ({len(chosen)} items) ==\n{table}")
        if verbose and split == "tune":  # errors are shown for the tuning half only
            for item, got in zip(chosen, predictions, strict=True):
                if _coarse(got) != _coarse(item.labels):
                    print(f"  {item.id}: gold={sorted(item.labels)} got={sorted(got)} :: {item.text[:90]!r}")
        results[split] = metrics
    return results


BENCH_PROMPT = ("I'm planning a two-week trip through Portugal and Spain next spring with my partner. We like "
                "food, architecture and short hikes, and we'd rather take trains than rent a car. Could you suggest "
                "a route that starts in Lisbon and ends in Barcelona, with two or three nights in each place, and "
                "tell us which cities are worth a day trip? We also want to know roughly how much the trains cost, "
                "whether we should book them in advance, and which neighbourhoods are quiet but central enough to "
                "walk everywhere. My partner is vegetarian, so restaurant tips that work for both of us would be "
                "great. We will arrive on a Friday evening, so please plan the first day lightly. Finally, what "
                "should we pack for the weather in April, and are there any festivals or holidays then that might "
                "make hotels more expensive or museums close? Thanks a lot for your help, we're really excited!!")


async def bench(address: str, requests: int = 200) -> dict[str, float]:
    """Input-check latency through the real service (gRPC + Triton) and output moderation cost per token."""
    import grpc
    from sluice.v1 import chat_pb2, safety_pb2, safety_pb2_grpc

    prompt = (BENCH_PROMPT * 2)[:1000]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = safety_pb2_grpc.SafetyStub(channel)
        request = safety_pb2.CheckInputRequest(messages=[chat_pb2.Message(role="user", content=prompt)])
        for _ in range(10):
            await stub.CheckInput(request)
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            await stub.CheckInput(request)
            samples.append((time.perf_counter() - started) * 1000)
        answer = (BENCH_PROMPT * 3)[:2000]
        chunks = [answer[i:i + CHUNK] for i in range(0, len(answer), CHUNK)]

        async def out_stream():
            for i, chunk in enumerate(chunks):
                yield safety_pb2.OutputChunk(text=chunk, request_id="bench" if i == 0 else "")

        emitted = []
        started = time.perf_counter()
        async for decision in stub.CheckOutput(out_stream()):
            emitted.append(decision.text)
        stream_ms = (time.perf_counter() - started) * 1000
    samples.sort()
    return {"input_p50_ms": statistics.median(samples), "input_p99_ms": samples[int(len(samples) * 0.99) - 1],
            "output_ms_per_token": stream_ms / len(chunks), "output_tokens": len(chunks),
            "output_intact": float("".join(emitted) == answer)}


def main(triton: str | None, verbose: bool, bench_address: str | None) -> int:
    async def run() -> int:
        classifier: Classifier = TritonClassifier(triton) if triton else LocalClassifier()
        try:
            await evaluate(classifier, verbose=verbose)
        finally:
            await classifier.close()
        if bench_address:
            numbers = await bench(bench_address)
            print(f"\n== latency via {bench_address} ==")
            print(f"input check, 1,000-character prompt: p50 {numbers['input_p50_ms']:.2f} ms, "
                  f"p99 {numbers['input_p99_ms']:.2f} ms")
            print(f"output moderation: {numbers['output_ms_per_token']:.3f} ms per token "
                  f"({numbers['output_tokens']} tokens of {CHUNK} characters, streamed over one gRPC stream)")
        return 0

    return asyncio.run(run())
