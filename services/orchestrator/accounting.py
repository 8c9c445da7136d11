"""Per-request token accounting. The metering layer opens a `TokenAccount` for each request in a context variable;
every generation round adds what the engine actually produced — including tokens drained after a client went away —
so usage records match the engine's own counts."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class TokenAccount:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    rounds: int = 0
    deployment: str | None = None
    first_token_at: float | None = None  # time.monotonic()

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def add_round(self, *, prompt: int, completion: int, cached: int, deployment: str | None) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_prompt_tokens += cached
        self.rounds += 1
        self.deployment = deployment or self.deployment

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


current_account: ContextVar[TokenAccount | None] = ContextVar("sluice_token_account", default=None)


@dataclass(slots=True)
class StreamTokens:
    """What the engine produced for one answer stream (one choice), drained tokens included: set by whoever needs
    that count (the output guard, to report on an answer it stopped) and added to by every generation round."""
    completion_tokens: int = 0


# Each choice of a request streams in its own task (and so its own context): the holder is per answer, not shared.
current_stream_tokens: ContextVar[StreamTokens | None] = ContextVar("sluice_stream_tokens", default=None)
