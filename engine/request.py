"""What the engine is asked to do and what it reports back, independent of Triton."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from engine.guided import Guide
from engine.logprobs import MAX_TOP_LOGPROBS
from engine.sampling import SamplingParams


class FinishReason(StrEnum):
    STOP = "stop"  # end id or a stop sequence
    LENGTH = "length"  # max_tokens or the context window
    CANCELLED = "cancelled"


@dataclass(slots=True)
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    priority: int = 0  # higher is scheduled first
    cache_salt_id: int | None = None  # prefix-cache namespace: blocks are shared only within one value (a tenant)
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    guide: Guide | None = None  # guided decoding: the output must match this schema, regex or grammar
    logprobs: int | None = None  # None: no log-probs; k: each token's log-prob and its k best alternatives (0..20)

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"num_top_log_probs must be in 0..{MAX_TOP_LOGPROBS}, got {self.logprobs}")


@dataclass(slots=True)
class StepOutput:
    request_id: str
    new_token_ids: list[int]
    finished: bool = False
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    # when the request asked for log-probs: one per new token, and per token its k best (token id, log-prob)
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


class OutputSink(Protocol):
    """Where one request's results go (a Triton response sender, a queue in tests, a benchmark recorder)."""

    def is_cancelled(self) -> bool: ...

    def emit(self, output: StepOutput) -> None: ...

    def fail(self, error: Exception) -> None: ...
