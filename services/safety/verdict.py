"""Verdicts: per-category scores against a policy, the spans that triggered them, and the resulting action."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from sluice.v1 import safety_pb2

from services.safety.detectors.pii import Finding
from services.safety.policy import PolicyAction, SafetyPolicy


class Action(IntEnum):  # ordered by severity; values match safety.proto's Action
    ALLOW = 1
    REDACT = 2
    BLOCK = 3
    STOP = 4


@dataclass(frozen=True, slots=True)
class CategoryResult:
    category: str
    score: float
    threshold: float
    triggered: bool


@dataclass(frozen=True, slots=True)
class SpanRef:
    message_index: int
    finding: Finding


@dataclass(slots=True)
class Verdict:
    action: Action
    categories: list[CategoryResult] = field(default_factory=list)
    spans: list[SpanRef] = field(default_factory=list)
    redacted_text: list[str] = field(default_factory=list)
    policy_id: str = ""
    degraded: bool = False

    @property
    def triggered(self) -> list[str]:
        return [c.category for c in self.categories if c.triggered]

    def to_proto(self) -> safety_pb2.Verdict:
        return safety_pb2.Verdict(
            action=int(self.action), categories=[category_proto(c) for c in self.categories],
            spans=[span_proto(s.finding, s.message_index) for s in self.spans],
            redacted_text=self.redacted_text, policy_id=self.policy_id, degraded=self.degraded)


def category_proto(result: CategoryResult) -> safety_pb2.CategoryScore:
    return safety_pb2.CategoryScore(category=result.category, score=result.score, threshold=result.threshold,
                                    triggered=result.triggered)


def span_proto(finding: Finding, message_index: int = 0, offset: int = 0) -> safety_pb2.Span:
    return safety_pb2.Span(message_index=message_index, start=finding.start + offset, end=finding.end + offset,
                           category=finding.category, detector=finding.detector)


def judge(policy: SafetyPolicy, scores: dict[str, float]) -> tuple[list[CategoryResult], PolicyAction | None]:
    """Category results and the most severe policy action among triggered categories (None: nothing triggered).
    REDACT outranks FLAG, BLOCK outranks both."""
    results: list[CategoryResult] = []
    worst: PolicyAction | None = None
    rank = {PolicyAction.FLAG: 1, PolicyAction.REDACT: 2, PolicyAction.BLOCK: 3}
    for category, score in scores.items():
        action = policy.action(category)
        if action is PolicyAction.OFF:
            continue
        threshold = policy.threshold(category)
        triggered = score >= threshold
        results.append(CategoryResult(category, round(float(score), 4), threshold, triggered))
        if triggered and (worst is None or rank[action] > rank[worst]):
            worst = action
    return results, worst
