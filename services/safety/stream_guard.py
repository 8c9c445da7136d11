"""Streaming output moderation with a bounded look-back window.

Generated text arrives in small chunks. The guard emits a chunk's text once it is safe to: PII is redacted before
it leaves, so the trailing piece that could still grow into a match (an unfinished word, a digit group that a
card or phone number may continue) is held back — at most `max_hold` characters. The classifier sees the last
`window` characters (emitted text plus the new part) every `classify_every` characters or at a sentence end, and
text is not emitted before it has been classified; an unsafe window STOPs the stream and what was already sent
stays sent. Time to first token: the first word is released as soon as it is finished (or closed by punctuation),
without waiting for `classify_every` characters — that wait was most of what the platform added to TTFT — and it is
classified while still unfinished, so the classifier call overlaps the next token's generation. Memory is bounded
by `window + max_hold + classify_every`, whatever the answer's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.safety.categories import CLASSIFIER_CATEGORIES, DENY_CATEGORY
from services.safety.checker import classify, rule_check
from services.safety.classifier_client import Classifier
from services.safety.detectors.pii import Finding, redact
from services.safety.policy import PolicyAction, SafetyPolicy
from services.safety.verdict import Action, CategoryResult, judge

# A token that may belong to a multi-token PII value: a digit group ("4111", "(415)", "+44") or a short upper-case
# group inside an IBAN ("WEST").
_GROUP = re.compile(r"[+(]?(?=[^\s]*\d)[\dA-Za-z()+\-.]{1,8}|[A-Z]{2,4}")
_SENTENCE_END = re.compile(r"[.!?\n]\s*$")
# An answer's first word may go out before the next token shows it is finished when it is letters closed by
# punctuation no PII value continues through ("Hello!", "Sure,"); not in an assignment (`password = Hello!...`).
_CLOSED_WORD = re.compile(r"[A-Za-z]+[!?,;]+")
_ASSIGNMENT = re.compile(r"[=:]")


def hold_start(text: str, max_hold: int) -> int:
    """Where the held-back tail of `text` starts: its unfinished last token, extended back over single spaces
    while the tokens on both sides look like parts of one number; never more than `max_hold` characters."""
    j = len(text)
    while j > 0 and not text[j - 1].isspace():
        j -= 1
    following = text[j:]
    while j > 1 and text[j - 1] == " " and not text[j - 2].isspace():
        k = j - 1
        while k > 0 and not text[k - 1].isspace():
            k -= 1
        previous = text[k:j - 1]
        if _GROUP.fullmatch(previous) and (following == "" or _GROUP.fullmatch(following)):
            j, following = k, previous
        else:
            break
    return max(j, len(text) - max_hold)


@dataclass(slots=True)
class GuardDecision:
    action: Action
    text: str = ""
    findings: list[Finding] = field(default_factory=list)  # offsets into the whole original stream
    categories: list[CategoryResult] = field(default_factory=list)
    final: bool = False


class StreamGuard:
    def __init__(self, classifier: Classifier, policy: SafetyPolicy, *, window: int = 512, max_hold: int = 128,
                 classify_every: int = 48) -> None:
        self.classifier = classifier
        self.policy = policy
        self.window = window
        self.max_hold = max_hold
        self.classify_every = classify_every
        self._emitted_tail = ""  # the last `window` characters sent (after redaction)
        self._pending = ""       # received, not yet sent (original text)
        self._offset = 0         # position of _pending[0] in the original stream
        self.stopped = False
        self._cleared_ahead = ""  # before the first release: the pending text already classified as safe

    @property
    def _released_any(self) -> bool:
        """Whether any text has been sent yet (every release moves the offset past it)."""
        return self._offset > 0

    async def feed(self, text: str) -> GuardDecision:
        if self.stopped:
            return GuardDecision(Action.STOP, final=True)
        self._pending += text
        return await self._advance(final=False)

    async def finish(self) -> GuardDecision:
        if self.stopped:
            return GuardDecision(Action.STOP, final=True)
        decision = await self._advance(final=True)
        decision.final = True
        return decision

    async def _advance(self, final: bool) -> GuardDecision:
        raw = self._pending
        cut = len(raw) if final else hold_start(raw, self.max_hold)
        if (not final and not self._released_any and _CLOSED_WORD.fullmatch(raw[cut:])
                and not _ASSIGNMENT.search(raw)):
            cut = len(raw)
        check = rule_check(raw, self.policy, injection=False)
        for finding in check.findings:  # never cut through a match: hold all of it
            if finding.start < cut < finding.end and not final:
                cut = finding.start
        ready_findings = [f for f in check.findings if f.end <= cut]
        deny = [f for f in ready_findings if f.category == DENY_CATEGORY]
        if deny and self.policy.action(DENY_CATEGORY) is PolicyAction.BLOCK:
            return self._stop([CategoryResult(DENY_CATEGORY, 1.0, self.policy.threshold(DENY_CATEGORY), True)],
                              deny)
        if cut == 0:
            if not final and not self._released_any and raw and raw != self._cleared_ahead:
                # The answer's first word is unfinished: classify it now (again as it grows over several tokens),
                # while the next token is being generated, so releasing it needs no classifier call of its own.
                if unsafe := await self._unsafe(raw):
                    return self._stop(unsafe, [])
                self._cleared_ahead = raw
            return GuardDecision(Action.ALLOW)
        ready = raw[:cut]
        if not final and self._released_any and len(ready) < self.classify_every and not _SENTENCE_END.search(ready):
            return GuardDecision(Action.ALLOW)  # too little new text to be worth a classifier call: hold it
        redactable = [f for f in ready_findings if f.category != DENY_CATEGORY
                      and self.policy.action(f.category) is PolicyAction.REDACT]
        text = redact(ready, redactable)
        covered = (not self._released_any and bool(self._cleared_ahead)  # what it adds is only white space
                   and self._cleared_ahead.startswith(ready.rstrip()))
        if not covered and (unsafe := await self._unsafe((self._emitted_tail + text)[-self.window:])):
            return self._stop(unsafe, [])
        self._pending = raw[cut:]
        shifted = [Finding(f.start + self._offset, f.end + self._offset, f.category, f.detector) for f in redactable]
        self._offset += cut
        self._emitted_tail = (self._emitted_tail + text)[-self.window:]
        return GuardDecision(Action.REDACT if redactable else Action.ALLOW, text, shifted)

    async def _unsafe(self, window: str) -> list[CategoryResult]:
        return await blocking_categories(self.classifier, self.policy, window)

    def _stop(self, categories: list[CategoryResult], findings: list[Finding]) -> GuardDecision:
        self.stopped = True
        self._pending = ""
        shifted = [Finding(f.start + self._offset, f.end + self._offset, f.category, f.detector) for f in findings]
        return GuardDecision(Action.STOP, "", shifted, categories, final=True)


async def blocking_categories(classifier: Classifier, policy: SafetyPolicy, text: str) -> list[CategoryResult]:
    """The categories the classifier finds in `text` whose policy action is BLOCK (none when the classifier is
    unavailable and the policy allows rules-only checks; ClassifierUnavailable when it does not)."""
    scored = await classify(classifier, [text], policy)
    if scored is None:
        return []
    results, _ = judge(policy, {c: scored[0][c] for c in CLASSIFIER_CATEGORIES})
    return [r for r in results if r.triggered and policy.action(r.category) is PolicyAction.BLOCK]
