import pytest

from engine.streaming import StreamInterval


def test_tiers_pick_the_interval_of_the_highest_threshold_passed() -> None:
    policy = StreamInterval.parse("8:2, 32:4")
    assert [policy.at(n) for n in (0, 1, 8, 9, 32, 33, 200)] == [1, 1, 1, 2, 2, 4, 4]


def test_an_empty_spec_streams_token_by_token() -> None:
    assert StreamInterval.parse("").at(500) == 1


@pytest.mark.parametrize("spec", ["8", "8:0", "-1:2", "x:2", "8:y"])
def test_a_malformed_tier_is_refused_with_its_text(spec: str) -> None:
    with pytest.raises(ValueError, match="stream interval tier"):
        StreamInterval.parse(spec)


def _sends(policy: StreamInterval, running: int, steps: list[int]) -> list[int]:
    """Tokens per response for a stream whose steps produce `steps` tokens each (the last token not special)."""
    sent, waiting, generated, responses = 0, 0, 0, []
    for new in steps:
        generated += new
        waiting += new
        if policy.due(generated, waiting, running):
            responses.append(waiting)
            sent, waiting = sent + waiting, 0
    return responses


def test_the_first_two_tokens_go_out_one_by_one_then_the_load_interval() -> None:
    policy = StreamInterval.parse("8:2,32:4")
    assert _sends(policy, 40, [1] * 10) == [1, 1, 4, 4]  # the end of the first word is not held back by load
    assert _sends(policy, 10, [1] * 6) == [1, 1, 2, 2]
    assert _sends(policy, 1, [1] * 3) == [1, 1, 1]
    assert _sends(policy, 40, [3, 1, 1, 1, 1]) == [3, 4]  # a first step of several tokens goes out at once
