"""Context budgeting: the system prompt plus as many of the most recent turns as fit, measured with the model's own
tokenizer and chat template (so template tokens count), leaving room for the reply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from services.common.errors import ApiError, invalid


class ChatEncoder(Protocol):
    def encode_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]: ...


def context_length_exceeded(needed: int, budget: int, context_window: int, max_tokens: int) -> ApiError:
    return ApiError(400, f"This model's maximum context length is {context_window} tokens. Your newest message "
                         f"needs {needed} prompt tokens with the system prompt, but only {budget} are available "
                         f"after reserving {max_tokens} for the completion. Please shorten the message or "
                         "request fewer completion tokens.", "invalid_request_error", "content",
                    "context_length_exceeded")


def fit_context(tokenizer: ChatEncoder, system_messages: Sequence[dict[str, Any]], turns: Sequence[dict[str, Any]],
                context_window: int, max_tokens: int) -> list[dict[str, Any]]:
    """Returns system messages + the longest suffix of `turns` whose rendered prompt fits in
    `context_window - max_tokens` tokens, starting at a user turn.

    Older turns are dropped whole, never cut mid-message. A suffix that would start with an assistant reply has that
    reply dropped too, so the model never sees an answer without its question. The newest turn (the user's message)
    is never dropped: if it does not fit with the system prompt, the request fails with `context_length_exceeded`.
    """
    if not turns:
        raise invalid("There is no message to answer.", "content", "empty_array")
    if max_tokens < 1:
        raise invalid("'max_tokens' must be at least 1.", "max_tokens", "invalid_value")
    system = list(system_messages)
    budget = context_window - max_tokens
    needed = len(tokenizer.encode_chat([*system, turns[-1]]))
    if needed > budget:
        raise context_length_exceeded(needed, max(budget, 0), context_window, max_tokens)
    # Grow the window from the newest turn backwards; each candidate is measured whole, so template tokens between
    # messages are counted exactly. Stops at the first turn that does not fit: the kept turns are contiguous.
    start = len(turns) - 1
    while start > 0 and len(tokenizer.encode_chat([*system, *turns[start - 1:]])) <= budget:
        start -= 1
    while turns[start].get("role") == "assistant" and start < len(turns) - 1:
        start += 1
    return [*system, *turns[start:]]
