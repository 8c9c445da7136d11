"""Windowed output moderation without processes: the rules that run where the text streams (ReleaseGate) and the
safety service's per-window classifier verdicts (WindowCheck)."""

from __future__ import annotations

import asyncio

from services.safety.classifier_batch import BatchingClassifier
from services.safety.classifier_client import ClassifierUnavailable
from services.safety.policy import SafetyPolicy
from services.safety.release_gate import ReleaseGate
from services.safety.verdict import Action
from services.safety.window_check import WindowCheck
from tests.unit.test_safety_guard_policy import KeywordClassifier


def _released(gate: ReleaseGate, text: str, step: int) -> list[str]:
    pieces = [gate.feed(text[i:i + step]).text for i in range(0, len(text), step)]
    return [*pieces, gate.finish().text]


def test_pii_split_across_deltas_is_never_released_before_redaction() -> None:
    text = "Sure, write to jane.doe@gmail.com or call 415-555-0132 and pay with 4111 1111 1111 1111 today."
    for step in (1, 3, 7):
        pieces = _released(ReleaseGate(SafetyPolicy()), text, step)
        assert "".join(pieces) == "Sure, write to [EMAIL] or call [PHONE] and pay with [CREDIT_CARD] today."
        for piece in pieces:
            assert "jane" not in piece and "4111" not in piece and "0132" not in piece and "555" not in piece


def test_words_are_released_as_soon_as_they_are_finished() -> None:
    gate = ReleaseGate(SafetyPolicy())
    assert gate.feed("Hello").text == ""  # could still grow into an address
    assert gate.feed(" there").text == "Hello "
    assert gate.feed(" friend").text == "there "


def test_labels_already_released_still_count_for_the_value_after_them() -> None:
    """"SIN" goes out long before the number; the detectors still see it (context), so the number is redacted."""
    gate = ReleaseGate(SafetyPolicy())
    pieces = _released(gate, "Your social insurance number is 046 454 286 as printed.", 4)
    assert "046" not in "".join(pieces) and "[" in "".join(pieces)


def test_deny_list_stops_before_the_match_is_released() -> None:
    gate = ReleaseGate(SafetyPolicy(id="acme", deny_list=(r"\bzephyr\b",)))
    assert gate.feed("About ").text == "About "
    step = gate.feed("zephyr: ")
    assert step.text == "" and [f.category for f in step.denied] == ["deny_list"]
    assert gate.feed("more").text == "" and gate.stopped


def test_window_check_sees_a_phrase_that_straddles_two_windows() -> None:
    async def scenario() -> None:
        check = WindowCheck(KeywordClassifier(), SafetyPolicy())
        assert (await check.check("All fine. UNS")).action is Action.ALLOW
        stop = await check.check("AFE here")
        assert stop.action is Action.STOP and stop.final and stop.categories[0].category == "violent_crimes"
        assert (await check.check("later")).action is Action.STOP

    asyncio.run(scenario())


def test_window_check_skips_the_classifier_for_white_space() -> None:
    async def scenario() -> int:
        classifier = KeywordClassifier()
        check = WindowCheck(classifier, SafetyPolicy())
        await check.check("  \n")
        return classifier.calls

    assert asyncio.run(scenario()) == 0


def test_windows_of_concurrent_streams_share_one_classifier_call() -> None:
    async def scenario() -> tuple[int, int, list]:
        inner = KeywordClassifier()
        batching = BatchingClassifier(inner, wait_s=0.05)
        batching.open_streams = 3
        results = await asyncio.gather(batching.scores(["fine"]), batching.scores(["UNSAFE", "ok"]),
                                       batching.scores(["also fine"]))
        batched_calls = inner.calls
        batching.open_streams = 1  # a lone stream does not wait
        await asyncio.wait_for(batching.scores(["alone"]), 0.02)
        return batched_calls, inner.calls, results

    batched_calls, calls, results = asyncio.run(scenario())
    assert batched_calls == 1 and calls == 2
    assert [len(r) for r in results] == [1, 2, 1]  # each caller gets its own rows, in order
    assert results[1][0]["violent_crimes"] == 0.7 and results[0][0]["violent_crimes"] == 0.0


def test_a_failed_batch_fails_every_window_in_it() -> None:
    async def scenario() -> list:
        batching = BatchingClassifier(KeywordClassifier(fail=True), wait_s=0.01)
        batching.open_streams = 2
        return await asyncio.gather(batching.scores(["a"]), batching.scores(["b"]), return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 2 and all(isinstance(o, ClassifierUnavailable) for o in outcomes)
