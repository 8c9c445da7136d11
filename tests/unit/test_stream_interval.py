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
