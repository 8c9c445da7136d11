"""Stop strings matched on streamed text: hold back only what could still become a stop."""

from __future__ import annotations

import random

import pytest

from services.orchestrator.stop_strings import StopStringMatcher


def run(matcher: StopStringMatcher, chunks: list[str]) -> tuple[list[str], bool]:
    """Feeds chunks until a hit; returns what was emitted per feed (plus the flush when no hit) and the hit flag."""
    emitted: list[str] = []
    for chunk in chunks:
        out, hit = matcher.feed(chunk)
        emitted.append(out)
        if hit:
            return emitted, True
    emitted.append(matcher.flush())
    return emitted, False


def test_stop_split_across_many_feeds_is_caught() -> None:
    matcher = StopStringMatcher(["<|STOP|>"])
    emitted, hit = run(matcher, ["Hello ", "<", "|", "ST", "O", "P", "|> never shown", "nor this"])
    assert hit
    assert "".join(emitted) == "Hello "
    assert len(emitted) == 7  # the hit came on the feed that completed the stop


def test_text_before_and_after_stop_in_one_chunk() -> None:
    matcher = StopStringMatcher(["END"])
    out, hit = matcher.feed("abcENDdef")
    assert (out, hit) == ("abc", True)


def test_partial_stop_is_held_back_then_released_by_other_text() -> None:
    matcher = StopStringMatcher(["STOP"])
    out, hit = matcher.feed("ab ST")
    assert not hit
    assert "ST" not in out  # the possible start of the stop is held back
    assert "ab ST".startswith(out)
    out2, hit = matcher.feed("ATE of things")
    assert not hit
    rest = matcher.flush()
    assert out + out2 + rest == "ab STATE of things"


def test_partial_stop_is_released_by_flush() -> None:
    matcher = StopStringMatcher(["STOP"])
    out, hit = matcher.feed("STO")
    assert (out, hit) == ("", False)
    assert matcher.flush() == "STO"
    assert matcher.flush() == ""


def test_earliest_of_several_stops_wins() -> None:
    matcher = StopStringMatcher(["world", "lo w", "xyz"])
    out, hit = matcher.feed("hello world")
    assert (out, hit) == ("hel", True)


def test_stop_completed_first_ends_the_stream() -> None:
    # "d" completes while "bcdefXYZ" is still only a prefix: the stream ends there, the longer stop never happens.
    matcher = StopStringMatcher(["bcdefXYZ", "d"])
    emitted, hit = run(matcher, ["ab", "cd", "efXYZ"])
    assert hit
    assert "".join(emitted) == "abc"


def test_when_one_chunk_completes_two_stops_the_earlier_start_wins() -> None:
    matcher = StopStringMatcher(["bcdefXYZ", "d"])
    assert matcher.feed("abcdefXYZ") == ("a", True)


def test_no_stops_passes_everything_through_immediately() -> None:
    matcher = StopStringMatcher([])
    for chunk in ["a", "bc", "", "STOP", "\n"]:
        assert matcher.feed(chunk) == (chunk, False)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    matcher = StopStringMatcher(["", ""])
    assert matcher.feed("abc") == ("abc", False)


def test_holds_back_at_most_longest_stop_minus_one() -> None:
    matcher = StopStringMatcher(["ab", "wxyz"])
    out, hit = matcher.feed("0123456789")
    assert (out, hit) == ("0123456", False)
    assert matcher.flush() == "789"


def _chunks(text: str, rng: random.Random) -> list[str]:
    chunks, i = [], 0
    while i < len(text):
        size = rng.randint(0, 4)  # empty chunks happen when a token decodes to nothing
        chunks.append(text[i:i + size])
        i += size
    return chunks


@pytest.mark.parametrize("seed", range(40))
def test_multiple_stops_cut_at_the_earliest_stop_in_the_text_seen_so_far(seed: int) -> None:
    """With several stops the stream ends on the first chunk that completes any stop; the output is cut at the
    earliest stop start in everything fed so far."""
    rng = random.Random(seed)
    alphabet = "ab\n#"
    for _ in range(25):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        chunks = _chunks(text, rng)
        emitted, hit = run(StopStringMatcher(stops), chunks)
        fed = "".join(chunks[:len(emitted)]) if hit else text
        before_last = fed[:len(fed) - len(chunks[len(emitted) - 1])] if hit else text
        if hit:
            assert not any(s in before_last for s in stops)  # no earlier chunk completed a stop
            assert "".join(emitted) == fed[:min(p for p in (fed.find(s) for s in stops) if p >= 0)]
        else:
            assert not any(s in text for s in stops)
            assert "".join(emitted) == text


@pytest.mark.parametrize("seed", range(10))
def test_single_stop_property(seed: int) -> None:
    rng = random.Random(1000 + seed)
    stop = "".join(rng.choice("xy") for _ in range(3))
    for _ in range(50):
        text = "".join(rng.choice("xyz") for _ in range(rng.randint(0, 30)))
        emitted, hit = run(StopStringMatcher([stop]), _chunks(text, rng))
        index = text.find(stop)
        assert hit == (index >= 0)
        assert "".join(emitted) == (text[:index] if index >= 0 else text)
