"""The cheapest check of all: a prompt whose text could not fit any model's context, refused before tokenising it.

A token covers at most as many characters as its longest vocabulary entry (byte-level BPE: one vocabulary character
per byte, and a character is at least one byte), so `characters / longest_token` is a lower bound on the token count.
A text above `context_window × longest_token` characters cannot fit, whatever the tokenizer would make of it.
"""

from __future__ import annotations

from services.common.errors import ApiError
from services.orchestrator.catalog import ModelCatalog
from services.orchestrator.chat_request import ChatRequest

# Texts longer than this are tokenised in a worker thread, off the event loop (≈ 1 ms of tokenizer time).
LARGE_TEXT_CHARS = 16_384


def longest_token_chars(tokenizer: object) -> int:
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)  # type: ignore[attr-defined]
    return max((len(token) for token in vocab), default=1)


class PromptSizeBound:
    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars

    @classmethod
    def for_catalog(cls, catalog: ModelCatalog) -> PromptSizeBound:
        limits = [d.context_window * longest_token_chars(d.tokenizer) for d in catalog.deployments()]
        return cls(max(limits, default=1 << 20))

    def check_text(self, chars: int, param: str = "messages") -> None:
        """Raises 400 context_length_exceeded when `chars` characters cannot fit any model's context."""
        if chars > self.max_chars:
            raise ApiError(400, f"The prompt is {chars} characters long, more than any model's maximum context length "
                                "can hold. Please reduce the length of the messages.", "invalid_request_error", param,
                           "context_length_exceeded")

    def check(self, chat: ChatRequest) -> int:
        """Checks the request's text; returns its length in characters."""
        chars = sum(len(m.content) + len(m.name or "") for m in chat.messages)
        chars += sum(len(str(call)) for m in chat.messages for call in m.tool_calls or ())
        self.check_text(chars)
        return chars
