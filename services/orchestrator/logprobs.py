"""Token log-probabilities: the engine's numbers (TensorRT-LLM's log-prob outputs) with token strings from the
serving deployment's tokenizer, in OpenAI's two shapes: chat (`choices[].logprobs.content[]`) and legacy completions
(`choices[].logprobs` with `tokens`, `token_logprobs`, `top_logprobs`, `text_offset`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer

from engine.tokenizer import ChatTokenizer


@dataclass(slots=True)
class TokenLogprobs:
    """The log-probs of the tokens behind the text delta just before this event (a generation event of its own, so
    the output guard can hold them back with the text they spell; see pipeline/output_guard.py)."""

    token_ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]] | None = None  # per token: the most likely (token id, logprob) pairs


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table that byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@dataclass(slots=True)
class TokenTexts:
    """Token id → (text, UTF-8 bytes) for one tokenizer. A byte-level BPE token can be part of a character: its
    bytes are exact, its text is the decoded bytes with U+FFFD for the incomplete part (as OpenAI reports it)."""

    tokenizer: Tokenizer
    _cache: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    _bytes_of: dict[str, int] | None = None

    @classmethod
    def of(cls, chat: ChatTokenizer) -> TokenTexts:
        """One table per tokenizer, kept for the process (a deployment's tokenizer lives as long)."""
        texts = _TABLES.get(id(chat.tokenizer))
        if texts is None:
            texts = cls(chat.tokenizer)
            decoder = json.loads(chat.tokenizer.to_str()).get("decoder") or {}
            if decoder.get("type") == "ByteLevel":
                texts._bytes_of = _byte_decoder()
            _TABLES[id(chat.tokenizer)] = texts  # holds the tokenizer, so its id is never reused
        return texts

    def get(self, token_id: int) -> tuple[str, bytes]:
        found = self._cache.get(token_id)
        if found is None:
            piece = self.tokenizer.id_to_token(token_id) or ""
            added = self.tokenizer.get_added_tokens_decoder().get(token_id)
            if self._bytes_of is not None and added is None and all(c in self._bytes_of for c in piece):
                raw = bytes(self._bytes_of[c] for c in piece)
            else:
                raw = self.tokenizer.decode([token_id], skip_special_tokens=False).encode()
            found = (raw.decode("utf-8", errors="replace"), raw)
            self._cache[token_id] = found
        return found


_TABLES: dict[int, TokenTexts] = {}


def chat_content(events: list[TokenLogprobs], texts: TokenTexts) -> list[dict[str, Any]]:
    """OpenAI chat `logprobs.content`: one entry per token, with its `top_logprobs` (empty when none were asked)."""
    content = []
    for event in events:
        for index, (token_id, logprob) in enumerate(zip(event.token_ids, event.logprobs, strict=False)):
            text, raw = texts.get(token_id)
            top = event.top[index] if event.top is not None and index < len(event.top) else []
            content.append({"token": text, "logprob": logprob, "bytes": list(raw), "top_logprobs": [
                {"token": texts.get(alt)[0], "logprob": alt_logprob, "bytes": list(texts.get(alt)[1])}
                for alt, alt_logprob in top]})
    return content


def completion_logprobs(events: list[TokenLogprobs], texts: TokenTexts, text_offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape. `text_offset` is where the first token's text starts in the choice's text."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    for event in events:
        for index, (token_id, logprob) in enumerate(zip(event.token_ids, event.logprobs, strict=False)):
            text = texts.get(token_id)[0]
            tokens.append(text)
            token_logprobs.append(logprob)
            offsets.append(text_offset)
            text_offset += len(text)
            top = event.top[index] if event.top is not None and index < len(event.top) else []
            tops.append({texts.get(alt)[0]: alt_logprob for alt, alt_logprob in top})
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}
