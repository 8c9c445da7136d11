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


def _adjusted(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int],
              output_ids: Sequence[int]) -> torch.Tensor:
    """One row with its penalties applied and its banned tokens at -inf."""
    logits = apply_penalties(logits, params, prompt_ids, output_ids)
    banned = _banned_tokens(params, output_ids)
    if banned:
        logits[torch.tensor(banned, dtype=torch.long)] = float("-inf")
    return logits


def needs_history(params: SamplingParams) -> bool:
    """Whether this row's logits depend on the tokens seen (penalties, banned words), beyond min_tokens."""
    return bool(params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty
                or params.bad_token_seqs)


def _holds_back_end(params: SamplingParams, output_ids: Sequence[int]) -> bool:
    return params.end_id is not None and len(output_ids) < params.min_tokens


def sample_batch(logits: torch.Tensor, params: Sequence[SamplingParams], prompt_ids: Sequence[Sequence[int]],
                 output_ids: Sequence[Sequence[int]], generators: Sequence[torch.Generator | None]) -> list[int]:
    """logits: [N, V] for the last position of N sequences. Returns each one's next token.

    Per row only what must be: penalties and bans where a request asks for them, and one uniform number from a
    seeded request's own generator. Temperature, top-k, top-p and the draw itself (inverse CDF) run on the whole
    batch.
    """
    # Per-request generators live on the CPU (seeded, reproducible on any device), so sampling does too.
    logits = logits.float().cpu()
    with_history = [needs_history(p) for p in params]
    history = [i for i, wanted in enumerate(with_history) if wanted]
    # rows whose only adjustment is min_tokens holding back the end token: one indexed write for all of them
    end_held = [i for i, p in enumerate(params) if not with_history[i] and _holds_back_end(p, output_ids[i])]
    if history or end_held:
        logits = logits.clone()
        for i in history:
            logits[i] = _adjusted(logits[i], params[i], prompt_ids[i], output_ids[i])
        if end_held:
            logits[end_held, [params[i].end_id for i in end_held]] = float("-inf")
    out = [0] * len(params)
    greedy = [i for i, p in enumerate(params) if p.greedy]
    if greedy:
        for i, token in zip(greedy, torch.argmax(logits[greedy], dim=-1).tolist(), strict=True):
            out[i] = int(token)
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if not rows:
        return out
    chosen = [params[i] for i in rows]
    x = logits[rows] / torch.tensor([p.temperature for p in chosen], dtype=torch.float32)[:, None]  # [R, V]
    vocab = x.shape[1]
    ks = [min(p.top_k, vocab) for p in chosen]
    if any(ks):
        kth_index = torch.tensor([max(k, 1) - 1 for k in ks], dtype=torch.long)[:, None]
        kth = torch.topk(x, max(ks), dim=-1).values.gather(1, kth_index)  # [R, 1] each row's k-th largest logit
        limited = torch.tensor([k > 0 for k in ks])[:, None]
        x = x.masked_fill(limited & (x < kth), float("-inf"))
    probs = torch.softmax(x, dim=-1)
    top_p = torch.tensor([p.top_p for p in chosen], dtype=torch.float32)
    if bool((top_p < 1.0).any()):
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p[:, None]  # keep the smallest set reaching p
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_probs.masked_fill(drop, 0.0))
    # Inverse CDF: one uniform number per row picks token i with probability p_i. A seeded request draws its number
    # from its own generator (same seed, same text); the others share one draw.
    cdf = torch.cumsum(probs, dim=-1)  # [R, V]; top-k / top-p left it unnormalised, so scale by its total
    uniform = torch.rand(len(rows))
    for j, p in enumerate(chosen):
        if p.seed is not None:
            uniform[j] = torch.rand(1, generator=generators[rows[j]])[0]
    targets = (uniform * cdf[:, -1])[:, None]
    picks = torch.searchsorted(cdf, targets, right=True)[:, 0].clamp_max_(vocab - 1).tolist()
    for i, token in zip(rows, picks, strict=True):
        out[i] = int(token)
    return out


def sample_next(logits: torch.Tensor, params: SamplingParams, prompt_ids: Sequence[int], output_ids: Sequence[int],
                generator: torch.Generator) -> int:
    """logits: [V] for the last position. Returns the next token id (sample_batch for one sequence)."""
    return sample_batch(logits[None], [params], [prompt_ids], [output_ids], [generator])[0]


def hits_stop_sequence(params: SamplingParams, output_ids: Sequence[int]) -> bool:
    return any(seq and list(output_ids[-len(seq):]) == seq for seq in params.stop_token_seqs)
