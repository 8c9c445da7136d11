"""One text check: rule detectors + classifier scores judged against a policy. Shared by CheckInput and the
stream guard."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from services.safety.categories import CLASSIFIER_CATEGORIES, DENY_CATEGORY, INJECTION_CATEGORY, PII_CATEGORIES
from services.safety.classifier_client import Classifier, ClassifierUnavailable
from services.safety.detectors.injection import find_injection
from services.safety.detectors.pii import Finding, find_pii, redact
from services.safety.policy import FailMode, PolicyAction, SafetyPolicy
from services.safety.verdict import Action, CategoryResult, SpanRef, Verdict, judge
from services.safety.work_limits import OFF_LOOP_CHARS

log = logging.getLogger(__name__)

# Roles whose content is checked. System prompts come from the operator and assistant turns were checked on the
# way out; tool results (retrieved passages, function output) are where indirect prompt injection arrives.
CHECKED_ROLES = frozenset({"user", "tool", "function", ""})


@dataclass(slots=True)
class TextCheck:
    """Rule findings and category scores for one text."""
    findings: list[Finding] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)


def rule_check(text: str, policy: SafetyPolicy, *, injection: bool = True) -> TextCheck:
    findings = find_pii(text, allowed=policy.allowed)
    if injection:
        findings += find_injection(text)
    findings += [Finding(s, e, DENY_CATEGORY, "deny_list") for s, e in policy.deny_spans(text)]
    scores = {category: 0.0 for category in PII_CATEGORIES}
    if injection:
        scores[INJECTION_CATEGORY] = 0.0
    scores[DENY_CATEGORY] = 0.0
    for finding in findings:
        scores[finding.category] = 1.0
    return TextCheck(findings, scores)


async def classify(classifier: Classifier, texts: list[str], policy: SafetyPolicy) -> list[dict[str, float]] | None:
    """Classifier scores, or None when it is unavailable and the policy allows rules-only checks."""
    try:
        return await classifier.scores([policy.mask_allowed(t) for t in texts])
    except ClassifierUnavailable:
        if policy.fail_mode is FailMode.FLAG:
            log.warning("safety classifier unavailable; policy %s allows a rules-only verdict", policy.id)
            return None
        raise


async def check_messages(classifier: Classifier, policy: SafetyPolicy,
                         messages: list[tuple[str, str]]) -> Verdict:
    """messages: (role, content) pairs. Category scores are the maximum over the checked messages."""
    checked = [i for i, (role, content) in enumerate(messages) if role in CHECKED_ROLES and content]
    if sum(len(messages[i][1]) for i in checked) > OFF_LOOP_CHARS:  # regexes over long text: off the event loop
        rules = await asyncio.to_thread(lambda: {i: rule_check(messages[i][1], policy) for i in checked})
    else:
        rules = {i: rule_check(messages[i][1], policy) for i in checked}
    scored = await classify(classifier, [messages[i][1] for i in checked], policy)
    scores: dict[str, float] = {c: 0.0 for c in CLASSIFIER_CATEGORIES} if scored is not None else {}
    for position, i in enumerate(checked):
        for category, value in rules[i].scores.items():
            scores[category] = max(scores.get(category, 0.0), value)
        if scored is not None:
            for category, value in scored[position].items():
                scores[category] = max(scores[category], value)
    results, worst = judge(policy, scores)
    triggered = {r.category for r in results if r.triggered}
    spans = [SpanRef(i, f) for i in checked for f in rules[i].findings if f.category in triggered]
    action = _action(worst, results, policy)
    redacted = [content for _, content in messages]
    if action is Action.REDACT:
        for i in checked:
            to_redact = [f for f in rules[i].findings
                         if f.category in triggered and policy.action(f.category) is PolicyAction.REDACT]
            redacted[i] = redact(messages[i][1], to_redact)
    return Verdict(action, results, spans, redacted, policy.id, degraded=scored is None)


def _action(worst: PolicyAction | None, results: list[CategoryResult], policy: SafetyPolicy) -> Action:
    if worst is PolicyAction.BLOCK:
        return Action.BLOCK
    if worst is PolicyAction.REDACT:
        # REDACT only makes sense for span categories; a classifier category set to "redact" blocks instead.
        spanless = [r for r in results if r.triggered and r.category in CLASSIFIER_CATEGORIES
                    and policy.action(r.category) is PolicyAction.REDACT]
        return Action.BLOCK if spanless else Action.REDACT
    return Action.ALLOW
