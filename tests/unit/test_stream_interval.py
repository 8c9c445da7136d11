import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from engine.streaming import WORD_HOLD_TOKENS, StreamInterval, word_breaks


def test_tiers_pick_the_interval_of_the_highest_threshold_passed() -> None:
    policy = StreamInterval.parse("8:2, 32:4")
    assert [policy.at(n) for n in (0, 1, 8, 9, 32, 33, 200)] == [1, 1, 1, 2, 2, 4, 4]


def test_the_shipped_tiers_send_eight_tokens_per_response_above_48_streams() -> None:
    import re

    from services.common.settings import REPO_ROOT

    template = (REPO_ROOT / "model_repository" / "tensorrt_llm" / "config.cpu.pbtxt.tmpl").read_text()
    spec = re.search(r'"stream_interval_tiers" value: \{ string_value: "([^"]*)"', template).group(1)
    policy = StreamInterval.parse(spec)
    assert [policy.at(n) for n in (8, 16, 40, 64)] == [1, 2, 4, 8]
    assert _sends(policy, 64, [1] * 18) == [1, 1, 8, 8]


def test_an_empty_spec_streams_token_by_token() -> None:
    assert StreamInterval.parse("").at(500) == 1


@pytest.mark.parametrize("spec", ["8", "8:0", "-1:2", "x:2", "8:y"])
def test_a_malformed_tier_is_refused_with_its_text(spec: str) -> None:
    with pytest.raises(ValueError, match="stream interval tier"):
        StreamInterval.parse(spec)


def _sends(policy: StreamInterval, running: int, steps: list[int], breaks: list[bool] | None = None) -> list[int]:
    """Tokens per response for a stream whose steps produce `steps` tokens each (the last token not special);
    `breaks`: a whole-words stream, whether each step's token holds whitespace."""
    sent, waiting, generated, responses, ended = 0, 0, 0, [], False
    for step, new in enumerate(steps):
        generated += new
        waiting += new
        ended = ended or (breaks is not None and breaks[step])
        if policy.due(generated, waiting, running, words=breaks is not None, word_ended=ended):
            ended = False
            responses.append(waiting)
            sent, waiting = sent + waiting, 0
    return responses


def test_the_first_two_tokens_go_out_one_by_one_then_the_load_interval() -> None:
    policy = StreamInterval.parse("8:2,32:4")
    assert _sends(policy, 40, [1] * 10) == [1, 1, 4, 4]  # the end of the first word is not held back by load
    assert _sends(policy, 10, [1] * 6) == [1, 1, 2, 2]
    assert _sends(policy, 1, [1] * 3) == [1, 1, 1]
    assert _sends(policy, 40, [3, 1, 1, 1, 1]) == [3, 4]  # a first step of several tokens goes out at once


def test_a_whole_words_stream_sends_at_each_token_that_ends_a_word() -> None:
    policy = StreamInterval.parse("8:2,32:4")
    #        He  llo  ␣wor ld  ␣is  ␣a  ␣te  st  .
    breaks = [False, False, True, False, True, True, True, False, False]
    assert _sends(policy, 1, [1] * 9, breaks) == [1, 1, 1, 2, 1, 1]  # "He", "llo", " wor", "ld is", " a", " te"
    # a word is already ~2 tokens: under load responses take half the interval, once a word has ended among them
    assert _sends(policy, 10, [1] * 9, breaks) == [1, 1, 1, 2, 1, 1]  # interval 2: word by word
    assert _sends(policy, 40, [1] * 9, breaks) == [1, 1, 2, 2, 2]  # interval 4: " wor" waits for "ld", " is" + " a"
    assert _sends(policy, 1, [1] * 20, [False] * 20) == [1, 1, WORD_HOLD_TOKENS, WORD_HOLD_TOKENS]  # no spaces


def _metaspace_tokenizer() -> Tokenizer:
    """A SentencePiece-style vocabulary: "▁" marks a word's start, and decoding drops a sequence's leading space."""
    vocab = {"<unk>": 0, "▁the": 1, "▁cap": 2, "ital": 3, ".": 4, "\n": 5, "▁": 6}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    return tokenizer


def test_word_breaks_are_tokens_holding_whitespace_after_other_text(demo_tokenizer) -> None:
    breaks = word_breaks(_metaspace_tokenizer(), 9)
    assert breaks.tolist() == [False, True, True, False, False, True, True, False, False]  # 7, 8: unused ids
    tokenizer = demo_tokenizer.tokenizer  # byte-level BPE: "Ġ" and "Ċ" are a space and a newline
    breaks = word_breaks(tokenizer, tokenizer.get_vocab_size())
    pieces = [(tokenizer.id_to_token(i), bool(breaks[i]))
              for i in tokenizer.encode("Hello there.\nThe end", add_special_tokens=False).ids]
    assert pieces and all(is_break == (piece[0] in "ĠĊ") for piece, is_break in pieces), pieces
