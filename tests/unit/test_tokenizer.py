"""Chat templating and incremental detokenisation on a tiny byte-level BPE checkpoint built in a tmp dir."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.tokenizer import ChatTemplateError, ChatTokenizer

SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
CORPUS = [
    "héllo wörld ✓ 日本語",
    "hello world, the quick brown fox jumps over the lazy dog",
    "héllo héllo wörld wörld ✓✓ 日本語 日本 本語",
    "Ünïcödé 🙂 emoji and ümlauts: äöü ß",
    "streaming tokens one by one",
]
MULTIBYTE_TEXTS = ["héllo wörld ✓ 日本語", "🙂🙂 ß日本語✓", "plain ascii", "a é b 語 c 🙂 d", "Ünïcödé\nnew line"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-bpe")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": TEMPLATE, "bos_token": "<|bos|>", "eos_token": {"content": "<|end|>"},
        "pad_token": "<|pad|>",
    }))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [tokenizer.token_to_id("<|end|>")]}))
    return path


@pytest.fixture(scope="module")
def chat(checkpoint: Path) -> ChatTokenizer:
    return ChatTokenizer.from_pretrained(checkpoint)


def stream(chat: ChatTokenizer, ids: list[int], sizes: list[int] | None = None) -> list[str]:
    detok = chat.detokenizer()
    pieces, i = [], 0
    for size in sizes or [1] * len(ids):
        pieces.append(detok.push(ids[i:i + size]))
        i += size
    assert i >= len(ids)
    pieces.append(detok.flush())
    return pieces


def test_special_token_ids_come_from_the_checkpoint(chat: ChatTokenizer) -> None:
    assert chat.eos_token == "<|end|>"
    assert chat.eos_token_id == chat.tokenizer.token_to_id("<|end|>")
    assert chat.pad_token_id == chat.tokenizer.token_to_id("<|pad|>")
    assert chat.bos_token == "<|bos|>"
    assert chat.vocab_size == chat.tokenizer.get_vocab_size(with_added_tokens=True)


def test_render_follows_the_template(chat: ChatTokenizer) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo ✓"}]
    assert chat.render(messages) == "<|bos|><|system|>\nbe brief<|end|>\n<|user|>\nhéllo ✓<|end|>\n<|assistant|>\n"
    assert chat.render(messages, add_generation_prompt=False).endswith("héllo ✓<|end|>\n")


def test_encode_chat_round_trips_and_keeps_special_tokens_whole(chat: ChatTokenizer) -> None:
    messages = [{"role": "user", "content": "héllo wörld ✓ 日本語"}]
    ids = chat.encode_chat(messages)
    assert chat.decode(ids, skip_special_tokens=False) == chat.render(messages)
    for token in ("<|bos|>", "<|user|>", "<|end|>", "<|assistant|>"):
        assert chat.tokenizer.token_to_id(token) in ids  # the template's markers are single special tokens
    assert ids[0] == chat.tokenizer.token_to_id("<|bos|>")
    assert chat.decode(ids) == "\nhéllo wörld ✓ 日本語\n\n"  # special tokens skipped by default


def test_multibyte_characters_span_several_tokens(chat: ChatTokenizer) -> None:
    # Guards the streaming tests below: they are only meaningful if some token is a partial character.
    ids = chat.encode("🙂 ß日本語✓")
    partial = [i for i in ids if "\ufffd" in chat.decode([i])]
    assert partial


@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
def test_streaming_token_by_token_matches_full_decode(chat: ChatTokenizer, text: str) -> None:
    ids = chat.encode(text)
    pieces = stream(chat, ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == chat.decode(ids) == text


@pytest.mark.parametrize("seed", range(8))
def test_streaming_random_chunks_matches_full_decode(chat: ChatTokenizer, seed: int) -> None:
    rng = random.Random(seed)
    chars = "abc é日本語✓🙂ß\n"
    text = "".join(rng.choice(chars) for _ in range(rng.randint(1, 40)))
    ids = chat.encode(text)
    sizes = []
    while sum(sizes) < len(ids):
        sizes.append(rng.randint(1, 3))
    pieces = stream(chat, ids, sizes)
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == chat.decode(ids) == text


def test_streaming_a_chat_with_special_tokens_skips_them(chat: ChatTokenizer) -> None:
    ids = chat.encode_chat([{"role": "user", "content": "日本語 ✓"}]) + chat.encode("wörld🙂") + [chat.eos_token_id]
    pieces = stream(chat, ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == chat.decode(ids)


def test_push_holds_back_an_incomplete_character(chat: ChatTokenizer) -> None:
    ids = chat.encode("🙂")
    assert len(ids) > 1  # four UTF-8 bytes, no merge learned for them
    detok = chat.detokenizer()
    assert detok.push(ids[:1]) == ""
    assert detok.push(ids[1:]) == "🙂"
    assert detok.flush() == ""


def test_flush_returns_a_truncated_character_at_end_of_stream(chat: ChatTokenizer) -> None:
    ids = chat.encode("a🙂")
    detok = chat.detokenizer()
    assert "".join(detok.push([i]) for i in ids[:-1]) == "a"
    assert detok.flush() == "\ufffd"  # the stream ended mid-character: the caller sees it, nothing is lost silently


@pytest.mark.parametrize("template", ["{{ messages[0]['content'] | nosuchfilter }}", "{% if %}broken",
                                      "{% for m in messages %}unclosed"])
def test_template_compile_error_raises_chat_template_error(chat: ChatTokenizer, template: str) -> None:
    bad = ChatTokenizer(tokenizer=chat.tokenizer, chat_template=template, bos_token=None, eos_token=None,
                        pad_token=None, eos_token_id=0, pad_token_id=0)
    with pytest.raises(ChatTemplateError):
        bad.render([{"role": "user", "content": "x"}])


def test_undefined_access_raises_chat_template_error(chat: ChatTokenizer) -> None:
    bad = ChatTokenizer(tokenizer=chat.tokenizer, chat_template="{{ messages[0].missing.deeper }}",
                        bos_token=None, eos_token=None, pad_token=None, eos_token_id=0, pad_token_id=0)
    with pytest.raises(ChatTemplateError):
        bad.render([{"role": "user", "content": "x"}])


def test_raise_exception_in_template_raises_chat_template_error(chat: ChatTokenizer) -> None:
    template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}"
                "{% endif %}{{ messages[0]['content'] }}")
    strict = ChatTokenizer(tokenizer=chat.tokenizer, chat_template=template, bos_token=None, eos_token=None,
                           pad_token=None, eos_token_id=0, pad_token_id=0)
    assert strict.render([{"role": "user", "content": "ok"}]) == "ok"
    with pytest.raises(ChatTemplateError, match="first message must be from the user"):
        strict.render([{"role": "assistant", "content": "no"}])


def test_missing_template_raises_chat_template_error(chat: ChatTokenizer) -> None:
    plain = ChatTokenizer(tokenizer=chat.tokenizer, chat_template=None, bos_token=None, eos_token=None,
                          pad_token=None, eos_token_id=0, pad_token_id=0)
    with pytest.raises(ChatTemplateError):
        plain.render([{"role": "user", "content": "x"}])
