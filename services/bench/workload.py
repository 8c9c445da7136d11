"""What the benchmark asks the engine to do: deterministic request lists (token ids and exact output lengths)."""

from __future__ import annotations

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
