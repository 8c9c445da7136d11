"""Chunking in the embedder's own tokens: headings start chunks, paragraphs stay whole, overlap is whole sentences."""

from __future__ import annotations

import pytest

from services.retrieval.chunking import MAX_WINDOWS, ChunkingConfig, chunk_text, split_sections
from services.retrieval.embedding_model import count_tokens


def test_headings_open_sections_with_their_path_and_fenced_code_is_not_a_heading() -> None:
    sections = split_sections("intro\n\n# A\n\npara a\n\n## B\n\n```\n# not a heading\n```\n\n# C\n\nc text")
    assert [s.heading for s in sections] == ["", "A", "A > B", "C"]
    assert sections[2].paragraphs == ["```\n# not a heading\n```"]


def test_a_heading_always_starts_a_new_chunk_and_prefixes_its_path() -> None:
    chunks = chunk_text("# Guide\n\nShort intro.\n\n## Install\n\nRun the installer.")
    assert [c.text for c in chunks] == ["Guide\n\nShort intro.", "Guide > Install\n\nRun the installer."]
    assert [c.index for c in chunks] == [0, 1]


def test_every_chunk_fits_the_budget_and_the_model_window() -> None:
    body = " ".join(f"Sentence {i} talks about widget number {i} in some detail." for i in range(120))
    config = ChunkingConfig(max_tokens=64, overlap_tokens=16)
    chunks = chunk_text(f"# Title\n\n{body}", config)
    assert len(chunks) > 5
    for chunk in chunks:
        assert count_tokens([chunk.text])[0] <= config.max_tokens
        assert chunk.tokens <= config.max_tokens


def test_consecutive_chunks_overlap_by_whole_sentences() -> None:
    body = " ".join(f"Fact {i} is that item {i} weighs {i * 3} grams." for i in range(60))
    chunks = chunk_text(body, ChunkingConfig(max_tokens=64, overlap_tokens=16))
    for previous, current in zip(chunks, chunks[1:], strict=False):
        first_sentence = current.text.split(". ")[0] + "."
        assert first_sentence in previous.text  # the new chunk starts with the previous chunk's last sentence
    covered = " ".join(c.text for c in chunks)
    assert all(f"Fact {i} is" in covered for i in range(60))  # nothing lost


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    paragraphs = [" ".join(f"P{p} sentence {i} is here." for i in range(6)) for p in range(8)]
    chunks = chunk_text("\n\n".join(paragraphs), ChunkingConfig(max_tokens=96, overlap_tokens=0))
    for chunk in chunks:
        for part in chunk.text.split("\n\n"):
            assert part in paragraphs  # no paragraph is cut when it could move whole to the next chunk


def test_a_giant_word_or_sentence_is_split_not_dropped() -> None:
    text = "word " * 500
    chunks = chunk_text(text.strip(), ChunkingConfig(max_tokens=64, overlap_tokens=0))
    assert sum(c.text.count("word") for c in chunks) == 500
    assert all(c.tokens <= 64 for c in chunks)


def test_empty_text_gives_no_chunks_and_bad_configs_are_refused() -> None:
    assert chunk_text("  \n\n ") == []
    with pytest.raises(ValueError):
        ChunkingConfig(max_tokens=300)
    with pytest.raises(ValueError):
        ChunkingConfig(max_tokens=64, overlap_tokens=32)


def test_each_chunk_lists_its_sentences_under_its_heading() -> None:
    chunks = chunk_text("# Guide\n\nFirst sentence here. Second one there.\n\nThird sentence too.")
    assert chunks[0].windows == ("Guide\n\nFirst sentence here.", "Guide\n\nSecond one there.",
                               "Guide\n\nThird sentence too.")
    assert chunk_text("# Guide\n\nOnly one sentence.")[0].windows == ()  # the chunk vector already is the sentence


def test_long_chunks_merge_neighbouring_sentences_into_at_most_max_windows() -> None:
    body = " ".join(f"Sentence {i} talks about widget number {i}." for i in range(40))
    for chunk in chunk_text(f"# T\n\n{body}", ChunkingConfig(max_tokens=192, overlap_tokens=0)):
        assert 2 <= len(chunk.windows) <= MAX_WINDOWS
        assert all(unit.startswith("T\n\n") for unit in chunk.windows)
        # Every sentence of the chunk, in order, each in exactly one window.
        assert " ".join(unit.removeprefix("T\n\n") for unit in chunk.windows) == chunk.text.removeprefix("T\n\n")
        sizes = count_tokens([u.removeprefix("T\n\n") for u in chunk.windows])
        assert max(sizes) <= 2 * min(sizes) + 16  # windows of about equal size
