"""Context budgeting with a real tokenizer and chat template: exact drop behaviour.

The tokenizer is word-level with an unknown token, so every word is one token and the template adds exactly:
1 (bos) + per message 2 (role marker, end marker) + 1 (generation prompt). Expected counts below follow from that.
"""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from engine.tokenizer import ChatTokenizer
from services.common.errors import ApiError
from services.orchestrator.conversations.context import fit_context

SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> ChatTokenizer:
    path = tmp_path_factory.mktemp("wordlevel")
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIALS)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": TEMPLATE, "bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>"}))
    return ChatTokenizer.from_pretrained(path)


def cost(messages: list[dict]) -> int:
    return 2 + sum(2 + len(m["content"].split()) for m in messages)


SYSTEM = [{"role": "system", "content": "be brief"}]  # 4 tokens
TURNS = [  # 5 tokens each
    {"role": "user", "content": "one two three"},
    {"role": "assistant", "content": "four five six"},
    {"role": "user", "content": "seven eight nine"},
    {"role": "assistant", "content": "ten eleven twelve"},
    {"role": "user", "content": "what now then"},
]


def test_token_arithmetic_matches_the_real_template(tok: ChatTokenizer) -> None:
    assert len(tok.encode_chat(SYSTEM + TURNS)) == cost(SYSTEM + TURNS) == 31


def test_everything_fits_at_the_exact_budget(tok: ChatTokenizer) -> None:
    assert fit_context(tok, SYSTEM, TURNS, context_window=40, max_tokens=9) == SYSTEM + TURNS  # 31 <= 40 - 9


def test_one_token_short_drops_the_oldest_exchange_whole(tok: ChatTokenizer) -> None:
    # Budget 30: the oldest user turn goes; the assistant reply it led to would start the window, so it goes too.
    kept = fit_context(tok, SYSTEM, TURNS, context_window=40, max_tokens=10)
    assert kept == SYSTEM + TURNS[2:]
    assert len(tok.encode_chat(kept)) == 21


@pytest.mark.parametrize(("budget", "expected_start"), [(31, 0), (30, 2), (21, 2), (20, 4), (11, 4)])
def test_kept_turns_are_the_longest_suffix_that_fits_and_starts_with_a_user(tok: ChatTokenizer, budget: int,
                                                                              expected_start: int) -> None:
    kept = fit_context(tok, SYSTEM, TURNS, context_window=budget + 16, max_tokens=16)
    assert kept == SYSTEM + TURNS[expected_start:]
    assert len(tok.encode_chat(kept)) <= budget


def test_messages_are_never_cut(tok: ChatTokenizer) -> None:
    for budget in range(11, 32):
        kept = fit_context(tok, SYSTEM, TURNS, context_window=budget + 1, max_tokens=1)
        assert all(any(m is t for t in SYSTEM + TURNS) for m in kept)  # the same objects, content untouched


def test_a_large_old_turn_ends_the_window_even_if_older_ones_would_fit(tok: ChatTokenizer) -> None:
    turns = [{"role": "user", "content": "hi"},
             {"role": "assistant", "content": " ".join(["word"] * 50)},
             {"role": "user", "content": "short question"}]
    # "hi" alone would fit next to the newest turn, but it is not contiguous with it: history never has holes.
    assert fit_context(tok, [], turns, context_window=30, max_tokens=10) == turns[2:]


def test_no_system_prompt(tok: ChatTokenizer) -> None:
    assert fit_context(tok, [], TURNS, context_window=100, max_tokens=10) == TURNS


def test_newest_message_that_cannot_fit_is_a_400_not_a_truncation(tok: ChatTokenizer) -> None:
    assert fit_context(tok, SYSTEM, TURNS, context_window=11 + 5, max_tokens=5) == SYSTEM + TURNS[4:]
    with pytest.raises(ApiError) as info:
        fit_context(tok, SYSTEM, TURNS, context_window=10 + 5, max_tokens=5)
    error = info.value
    assert (error.status, error.code, error.type) == (400, "context_length_exceeded", "invalid_request_error")
    assert "11" in error.message and "10" in error.message
    with pytest.raises(ApiError) as info:  # max_tokens alone larger than the window
        fit_context(tok, [], TURNS, context_window=100, max_tokens=200)
    assert info.value.code == "context_length_exceeded"


def test_invalid_calls_are_400s(tok: ChatTokenizer) -> None:
    with pytest.raises(ApiError):
        fit_context(tok, SYSTEM, [], context_window=100, max_tokens=10)
    with pytest.raises(ApiError):
        fit_context(tok, SYSTEM, TURNS, context_window=100, max_tokens=0)


def test_with_the_demo_models_tokenizer(demo_tokenizer: ChatTokenizer) -> None:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Message number {i}: " + "blah " * i}
             for i in range(41)]
    budget = 300
    kept = fit_context(demo_tokenizer, SYSTEM, turns, context_window=budget + 50, max_tokens=50)
    start = len(turns) - (len(kept) - 1)
    assert kept[1]["role"] == "user" and kept[1:] == turns[start:]
    assert len(demo_tokenizer.encode_chat(kept)) <= budget
    assert len(demo_tokenizer.encode_chat([*SYSTEM, *turns[start - 2:]])) > budget  # the dropped exchange did not fit
