"""Log-probs of sampled tokens, vLLM's convention ("raw_logprobs"): the log-softmax of the model's own logits, before
temperature, penalties, top-k/top-p and the guided-decoding mask. A constrained token's log-prob is therefore what the
model gave it, not the renormalised probability of the masked distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_TOP_LOGPROBS = 20


@dataclass(slots=True)
class TokenLogprob:
    logprob: float
    top: list[tuple[int, float]]  # the k most likely tokens, best first (empty when k is 0)


def raw_log_softmax(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """[len(rows), V] float32 log-probs of these rows; call before the logits are masked or penalised."""
    return torch.log_softmax(logits[torch.tensor(rows, dtype=torch.long)].float(), dim=-1)


def token_logprobs(log_probs: torch.Tensor, tokens: list[int], ks: list[int]) -> list[TokenLogprob]:
    """log_probs: [R, V] from raw_log_softmax; each row's chosen token and its `ks[i]` best alternatives."""
    chosen = log_probs.gather(1, torch.tensor(tokens, dtype=torch.long)[:, None])[:, 0].tolist()
    widest = max(ks, default=0)
    if widest:
        values, ids = torch.topk(log_probs, widest, dim=-1)
        values_list, ids_list = values.tolist(), ids.tolist()
    out = []
    for i, (logprob, k) in enumerate(zip(chosen, ks, strict=True)):
        top = list(zip(ids_list[i][:k], values_list[i][:k], strict=True)) if k else []
        out.append(TokenLogprob(logprob, top))
    return out
