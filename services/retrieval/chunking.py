"""Token-aware chunking that follows the document's shape: markdown headings start a new chunk, paragraphs are kept
whole when they fit, long paragraphs break between sentences, and consecutive chunks of a section overlap by whole
sentences. Sizes are counted in the embedder's own tokens, so no chunk is silently truncated by the model.

Each chunk's text starts with its heading path ("Guide > Install"), which gives both retrieval signals the context
that the paragraph alone lacks. Each chunk also lists its sentences (heading path first, at most `MAX_WINDOWS`): one
mean-pooled vector for a whole chunk blurs a detail that one sentence states, so the search scores a chunk by its best
sentence too (services/retrieval/search.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from services.retrieval.embedding_model import MAX_SEQ_TOKENS, count_tokens

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")

Counter = Callable[[list[str]], list[int]]
MAX_WINDOWS = 12  # sentence windows per chunk; longer chunks merge neighbouring sentences into fewer windows


@dataclass(frozen=True, slots=True)
class ChunkingConfig:
    max_tokens: int = 192  # body + heading path; [CLS]/[SEP] come on top and must stay within MAX_SEQ_TOKENS
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if not 16 <= self.max_tokens <= MAX_SEQ_TOKENS - 2:
            raise ValueError(f"max_tokens must be in [16, {MAX_SEQ_TOKENS - 2}], got {self.max_tokens}")
        if not 0 <= self.overlap_tokens <= self.max_tokens // 4:
            raise ValueError(f"overlap_tokens must be in [0, max_tokens/4], got {self.overlap_tokens}")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str  # heading path + body: what is embedded, indexed for BM25 and returned
    tokens: int
    heading: str  # "A > B", or "" before the first heading
    windows: tuple[str, ...] = ()  # heading path + sentence window, for fine-grained dense scoring; () for one sentence


@dataclass(slots=True)
class _Unit:
    text: str
    tokens: int
    paragraph_start: bool


@dataclass(slots=True)
class _Section:
    heading: str
    paragraphs: list[str]


def split_sections(text: str) -> list[_Section]:
    """Markdown headings (outside fenced code) open sections; blank lines separate paragraphs."""
    sections = [_Section("", [])]
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def end_paragraph() -> None:
        if lines and "".join(lines).strip():
            sections[-1].paragraphs.append("\n".join(lines).strip())
        lines.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            end_paragraph()
            level = len(heading.group(1))
            path = [(lv, title) for lv, title in path if lv < level] + [(level, heading.group(2))]
            sections.append(_Section(" > ".join(title for _, title in path), []))
        elif not line.strip() and not in_fence:
            end_paragraph()
        else:
            lines.append(line)
    end_paragraph()
    return [s for s in sections if s.paragraphs]


def _split_long(sentence: str, tokens: int, budget: int, count: Counter) -> list[_Unit]:
    """A sentence longer than the budget: greedy runs of whole words."""
    words = sentence.split()
    sizes = count(words)
    units, run, run_tokens = [], [], 0
    for word, size in zip(words, sizes, strict=True):
        if run and run_tokens + size > budget:
            units.append(_Unit(" ".join(run), run_tokens, False))
            run, run_tokens = [], 0
        if size > budget:  # one absurdly long "word" (a URL, base64): cut it by characters
            word, size = word[: budget * 2], budget
        run.append(word)
        run_tokens += size
    if run:
        units.append(_Unit(" ".join(run), run_tokens, False))
    return units


def _units(paragraphs: list[str], budget: int, count: Counter) -> list[_Unit]:
    sentences = [(i, s) for i, p in enumerate(paragraphs) for s in _SENTENCE_END.split(p) if s.strip()]
    sizes = count([s for _, s in sentences])
    units: list[_Unit] = []
    previous = -1
    for (para, sentence), size in zip(sentences, sizes, strict=True):
        pieces = [_Unit(sentence, size, False)] if size <= budget else _split_long(sentence, size, budget, count)
        pieces[0].paragraph_start = para != previous
        previous = para
        units.extend(pieces)
    return units


def _pack(units: list[_Unit], budget: int, overlap: int) -> list[list[_Unit]]:
    chunks: list[list[_Unit]] = []
    current: list[_Unit] = []
    fresh = 0  # units in `current` that are not overlap from the previous chunk

    def flush() -> None:
        nonlocal current, fresh
        chunks.append(current)
        tail: list[_Unit] = []
        for unit in reversed(current):
            if sum(u.tokens for u in tail) + unit.tokens > overlap:
                break
            tail.insert(0, unit)
        current, fresh = tail, 0

    i = 0
    while i < len(units):
        unit = units[i]
        used = sum(u.tokens for u in current)
        if fresh and unit.paragraph_start and used >= budget // 2:
            paragraph = unit.tokens
            for later in units[i + 1:]:
                if later.paragraph_start:
                    break
                paragraph += later.tokens
            if used + paragraph > budget:  # the next paragraph will not fit: break here, between paragraphs
                flush()
                continue
        if current and used + unit.tokens > budget:
            if fresh:
                flush()
            else:  # only overlap left and still no room: drop the overlap
                current = []
            continue
        current.append(unit)
        fresh += 1
        i += 1
    if fresh:
        chunks.append(current)
    return chunks


def _join(units: list[_Unit]) -> str:
    text = ""
    for n, unit in enumerate(units):
        text += ("" if n == 0 else "\n\n" if unit.paragraph_start else " ") + unit.text
    return text


def _windows(group: list[_Unit], heading: str) -> tuple[str, ...]:
    """The chunk's sentences, in at most MAX_WINDOWS windows of about equal tokens (a sentence goes to the window its
    token midpoint falls in), each under the heading path."""
    if len(group) < 2:
        return ()
    count = min(len(group), MAX_WINDOWS)
    total = sum(u.tokens for u in group) or 1
    windows: list[list[str]] = [[] for _ in range(count)]
    seen = 0
    for unit in group:
        windows[min(count - 1, int((seen + unit.tokens / 2) / total * count))].append(unit.text)
        seen += unit.tokens
    prefix = f"{heading}\n\n" if heading else ""
    return tuple(prefix + " ".join(w) for w in windows if w)


def chunk_text(text: str, config: ChunkingConfig | None = None, count: Counter = count_tokens) -> list[Chunk]:
    config = config or ChunkingConfig()
    chunks: list[Chunk] = []
    for section in split_sections(text):
        heading_tokens = count([section.heading])[0] + 2 if section.heading else 0  # + the "\n\n" separator
        budget = max(config.max_tokens - heading_tokens, config.max_tokens // 2)
        overlap = min(config.overlap_tokens, budget // 4)
        for group in _pack(_units(section.paragraphs, budget, count), budget, overlap):
            body = _join(group)
            tokens = sum(u.tokens for u in group)
            chunk_text_ = f"{section.heading}\n\n{body}" if section.heading else body
            chunks.append(Chunk(len(chunks), chunk_text_, tokens + heading_tokens, section.heading,
                                _windows(group, section.heading)))
    return chunks
