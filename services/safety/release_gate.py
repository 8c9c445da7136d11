"""The rule half of streaming output moderation, run where the text streams (the orchestrator's output guard), so
that releasing a token needs no call to another process.

Generated text is fed in as it arrives; `feed` answers with the text that may be released now: PII redacted by the
tenant's policy, the deny list checked. The trailing piece that could still grow into a PII match (an unfinished
word, digit groups a card or phone number may continue) is held back — at most `max_hold` characters — so no PII
value is ever released before it can be redacted. Detectors see the last `context` characters already released
as well, for the labels some values need ("SIN: ...") or that say a number is something else ("order no. ...").
The classifier's verdicts are not part of this: services/safety/window_check.py gives them per window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.safety.categories import DENY_CATEGORY
from services.safety.checker import rule_check
from services.safety.detectors.pii import Finding, redact
from services.safety.policy import PolicyAction, SafetyPolicy
from services.safety.stream_guard import _ASSIGNMENT, _CLOSED_WORD, hold_start


@dataclass(slots=True)
class Release:
    text: str = ""  # what may be sent now (already redacted)
    redacted: list[Finding] = field(default_factory=list)  # offsets into the whole original stream
    denied: list[Finding] = field(default_factory=list)  # deny-list matches that block the answer: stop it


class ReleaseGate:
    def __init__(self, policy: SafetyPolicy, *, max_hold: int = 128, context: int = 40) -> None:
        self.policy = policy
        self.max_hold = max_hold
        self.context = context
        self._pending = ""  # received, not yet released (original text)
        self._before = ""   # the last `context` characters released (original text)
        self._offset = 0    # position of _pending[0] in the original stream
        self.stopped = False

    def feed(self, text: str) -> Release:
        if self.stopped:
            return Release()
        self._pending += text
        return self._advance(final=False)

    def finish(self) -> Release:
        """Everything still held back, redacted as needed: the answer is complete."""
        if self.stopped:
            return Release()
        return self._advance(final=True)

    def _advance(self, final: bool) -> Release:
        raw = self._pending
        cut = len(raw) if final else hold_start(raw, self.max_hold)
        if (not final and self._offset == 0 and _CLOSED_WORD.fullmatch(raw[cut:])
                and not _ASSIGNMENT.search(raw)):
            cut = len(raw)  # the answer's first word closed by punctuation ("Sure,"): no need to wait
        if cut == 0:  # all of it is still held (a word in progress): nothing to release, nothing to check yet
            return Release()
        before = len(self._before)
        findings = [Finding(max(0, f.start - before), f.end - before, f.category, f.detector)
                    for f in rule_check(self._before + raw, self.policy, injection=False).findings if f.end > before]
        if not final:
            for finding in findings:  # never cut through a match: hold all of it
                if finding.start < cut < finding.end:
                    cut = finding.start
        ready = [f for f in findings if f.end <= cut]
        denied = [f for f in ready if f.category == DENY_CATEGORY]
        if denied and self.policy.action(DENY_CATEGORY) is PolicyAction.BLOCK:
            self.stopped = True
            self._pending = ""
            return Release(denied=self._shifted(denied))
        if cut == 0:  # a match may still grow from the very start
            return Release()
        redactable = [f for f in ready if f.category != DENY_CATEGORY
                      and self.policy.action(f.category) is PolicyAction.REDACT]
        text = redact(raw[:cut], redactable)
        shifted = self._shifted(redactable)
        self._before = (self._before + raw[:cut])[-self.context:] if self.context else ""
        self._pending = raw[cut:]
        self._offset += cut
        return Release(text, shifted)

    def _shifted(self, findings: list[Finding]) -> list[Finding]:
        return [Finding(f.start + self._offset, f.end + self._offset, f.category, f.detector) for f in findings]
