"""A request's state inside the engine. There is no prefill/decode flag: a sequence has tokens (prompt + output) and
a count of those whose KV is computed; each step the scheduler grants it some number of tokens to compute."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from llguidance import LLMatcher

from engine.request import FinishReason, GenerationRequest, OutputSink


class SequenceStatus(IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED = 2


@dataclass(slots=True, eq=False)
class Sequence:
    request: GenerationRequest
    sink: OutputSink | None = None
    cache_salt: bytes = b""  # model (and tenant) key mixed into block hashes
    status: SequenceStatus = SequenceStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    num_preemptions: int = 0
    admitted: bool = False
    finish_reason: FinishReason | None = None
    first_token_ns: int = 0
    last_token_ns: int = 0
    generator: torch.Generator | None = None
    matcher: LLMatcher | None = None  # guided decoding: the grammar's state after the output so far

    def __post_init__(self) -> None:
        self.generator = self.request.params.make_generator()

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def prompt_ids(self) -> list[int]:
        return self.request.prompt_ids

    @property
    def all_token_ids(self) -> list[int]:
        return self.request.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.request.prompt_ids) + len(self.output_ids)

    @property
    def num_pending_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    def append_token(self, token: int) -> None:
        now = time.monotonic_ns()
        if not self.output_ids:
            self.first_token_ns = now
        self.last_token_ns = now
        self.output_ids.append(token)
