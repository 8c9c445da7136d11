"""Per-request sampling parameters (the `tensorrt_llm` slot's runtime inputs) and the token sampler."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    end_id: int | None = None
    stop_token_seqs: list[list[int]] = field(default_factory=list)
    bad_token_seqs: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0, got {self.min_tokens}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must fit in uint64, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def make_generator(self) -> torch.Generator:
        generator = torch.Generator()
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        generator.manual_seed(seed % (2**63))
        return generator


def apply_penalties(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int],
                    output_ids: Sequence[int]) -> torch.Tensor:
    """logits: [V] float32, modified copy. Repetition penalty covers prompt + output (HF semantics); presence and
    frequency penalties cover the output only (OpenAI semantics)."""
    logits = logits.clone()
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long)
        if seen.numel():
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / params.repetition_penalty,
                                       values * params.repetition_penalty)
    if output_ids and (params.presence_penalty or params.frequency_penalty):
        ids, counts = torch.unique(torch.tensor(list(output_ids), dtype=torch.long), return_counts=True)
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts.to(logits.dtype)
    return logits


def _banned_tokens(params: SamplingParams, output_ids: Sequence[int]) -> list[int]:
    banned: list[int] = []
    for seq in params.bad_token_seqs:
        if not seq:
            continue
        prefix = seq[:-1]
        if not prefix or list(output_ids[-len(prefix):]) == prefix:
            banned.append(seq[-1])
    if params.end_id is not None and len(output_ids) < params.min_tokens:
        banned.append(params.end_id)
    return banned


def sample_next(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int], output_ids: Sequence[int],
                generator: torch.Generator) -> int:
    """logits: [V] for the last position. Returns the next token id."""
    # Per-request generators live on the CPU (seeded, reproducible on any device), so sampling does too.
    logits = apply_penalties(logits.float().cpu(), params, prompt_ids, output_ids)
    banned = _banned_tokens(params, output_ids)
    if banned:
        logits[torch.tensor(banned, dtype=torch.long)] = float("-inf")
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > params.top_p  # keep the smallest set whose mass reaches top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


def hits_stop_sequence(params: SamplingParams, output_ids: Sequence[int]) -> bool:
    return any(seq and list(output_ids[-len(seq):]) == seq for seq in params.stop_token_seqs)
