"""The safety service's half of windowed output moderation (CheckOutput with `windowed` set).

The orchestrator releases generated text as it arrives, after its own PII redaction and deny-list check, and sends
the released text here once per window (a few dozen characters, or a sentence). Each window is classified together
with the text released before it — the last `window` characters (256: a sentence or two of context; the
classifier's time grows with its input) — so a phrase that straddles two windows is seen whole; the answer is ALLOW
or STOP with the blocking categories. Nothing here holds text back: that is the orchestrator's bounded look-back
(services/safety/release_gate.py)."""

from __future__ import annotations

from services.safety.classifier_client import Classifier
from services.safety.policy import SafetyPolicy
from services.safety.stream_guard import GuardDecision, blocking_categories
from services.safety.verdict import Action


class WindowCheck:
    def __init__(self, classifier: Classifier, policy: SafetyPolicy, *, window: int = 256) -> None:
        self.classifier = classifier
        self.policy = policy
        self.window = window
        self._tail = ""  # the last `window` characters received
        self.stopped = False

    async def check(self, released: str) -> GuardDecision:
        """The verdict on `released` (text new since the last window) read with the text before it."""
        if self.stopped:
            return GuardDecision(Action.STOP, final=True)
        self._tail = (self._tail + released)[-self.window:]
        if not released.strip():
            return GuardDecision(Action.ALLOW)
        unsafe = await blocking_categories(self.classifier, self.policy, self._tail)
        if unsafe:
            self.stopped = True
            return GuardDecision(Action.STOP, categories=unsafe, final=True)
        return GuardDecision(Action.ALLOW)
