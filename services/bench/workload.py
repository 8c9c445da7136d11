"""What the benchmark asks the engine to do: deterministic request lists (token ids and exact output lengths)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class RequestSpec:
    request_id: str
    prompt_ids: list[int]
    output_len: int  # exact: the benchmark sets min_tokens = max_tokens and no end id


def _randint(low: int, high: int, size: int, generator: torch.Generator) -> list[int]:
    return torch.randint(low, high, (size,), generator=generator).tolist()


def mixed_workload(n: int, vocab_size: int, seed: int = 0, prompt_len: tuple[int, int] = (16, 128),
                   output_len: tuple[int, int] = (16, 256), prefix: str = "req") -> list[RequestSpec]:
    """n requests with random prompts and output lengths, each drawn uniformly from the inclusive ranges."""
    g = torch.Generator().manual_seed(seed)
    prompts = _randint(prompt_len[0], prompt_len[1] + 1, n, g)
    outputs = _randint(output_len[0], output_len[1] + 1, n, g)
    low = min(3, vocab_size - 1)  # keep clear of the usual special ids (pad/bos/eos) where the vocabulary allows
    return [RequestSpec(f"{prefix}-{i}", _randint(low, vocab_size, p, g), o)
            for i, (p, o) in enumerate(zip(prompts, outputs, strict=True))]


def chat_length_workload(n: int, vocab_size: int, seed: int = 0, prompt_len: tuple[int, int] = (16, 128),
                         median_output: int = 64, spread: float = 1.0, output_len: tuple[int, int] = (8, 768),
                         prefix: str = "chat") -> list[RequestSpec]:
    """n requests whose output lengths follow a log-normal law (median `median_output`, log-space standard deviation
    `spread`), clipped to `output_len`: most answers short, a few long, the shape of chat answer lengths (and unlike
    a uniform draw, where the longest of a batch is never much past twice the mean). Prompts as in mixed_workload."""
    g = torch.Generator().manual_seed(seed)
    prompts = _randint(prompt_len[0], prompt_len[1] + 1, n, g)
    drawn = torch.empty(n, dtype=torch.float64).log_normal_(math.log(median_output), spread, generator=g)
    outputs = [min(max(round(x), output_len[0]), output_len[1]) for x in drawn.tolist()]
    low = min(3, vocab_size - 1)
    return [RequestSpec(f"{prefix}-{i}", _randint(low, vocab_size, p, g), o)
            for i, (p, o) in enumerate(zip(prompts, outputs, strict=True))]


def static_batching_ceiling(specs: list[RequestSpec], batch: int) -> float:
    """How many times more tokens per step in-flight batching can make than padded static batching of `batch`
    requests in submission order: every static batch runs as many steps as its longest request, with every row
    busy (an upper bound: it assumes a step costs the same whatever the batch holds)."""
    steps = sum(max(s.output_len for s in specs[i:i + batch]) * len(specs[i:i + batch])
                for i in range(0, len(specs), batch))
    return steps / sum(s.output_len for s in specs)


def fixed_workload(n: int, vocab_size: int, output_len: int, seed: int = 0,
                   prompt_len: tuple[int, int] = (16, 128), prefix: str = "peer") -> list[RequestSpec]:
    """The peer comparison's shape: random prompts, every request generating exactly `output_len` tokens."""
    specs = mixed_workload(n, vocab_size, seed, prompt_len, (output_len, output_len), prefix)
    return specs


def shared_prefix_workload(n: int, vocab_size: int, system_len: int = 512, user_len: int = 16,
                           output_len: int = 16, seed: int = 0) -> list[RequestSpec]:
    """n requests sharing one `system_len`-token system prompt, each with its own `user_len`-token user part."""
    g = torch.Generator().manual_seed(seed)
    low = min(3, vocab_size - 1)
    system = _randint(low, vocab_size, system_len, g)
    return [RequestSpec(f"prefix-{i}", system + _randint(low, vocab_size, user_len, g), output_len)
            for i in range(n)]
