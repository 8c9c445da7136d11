"""The native paged-attention kernel against gather + scaled_dot_product_attention, and the engine's two attention
paths (kernel, PyTorch fallback) against the full-recompute reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine import kernels
from engine.kernels.build import build
from tests.unit.engine_factories import greedy, make_engine, make_model, make_prompt, reference_greedy, submit


@pytest.fixture(scope="module", autouse=True)
def built_kernels() -> None:
    build()  # no-op when current; CI builds it in `make` anyway
    assert kernels.load(), "the native kernels must load once built"


def _reference(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, table: list[int], length: int,
               block_size: int) -> torch.Tensor:
    pos = torch.arange(length)
    slots = torch.tensor(table, dtype=torch.long)[pos // block_size] * block_size + pos % block_size
    k = k_pool[slots].transpose(0, 1)[None]  # [1, KV, L, D]
    v = v_pool[slots].transpose(0, 1)[None]
    return F.scaled_dot_product_attention(q[None, :, None, :], k, v, enable_gqa=True)[0, :, 0, :]  # [H, D]


@pytest.mark.parametrize("pool_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"),
                         [(8, 4, 32), (4, 4, 16), (6, 2, 24), (2, 1, 64), (6, 3, 16)])
def test_kernel_matches_gathered_attention(heads: int, kv_heads: int, head_dim: int, pool_dtype: torch.dtype) -> None:
    """A bfloat16 pool is read as float32 (the reference attends over the same values widened)."""
    generator = torch.Generator().manual_seed(heads * 100 + head_dim)
    block_size, num_blocks = 4, 64
    k_pool = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=generator).to(pool_dtype)
    v_pool = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=generator).to(pool_dtype)
    lengths = [1, 3, 4, 5, 17, 40]
    order = torch.randperm(num_blocks, generator=generator).tolist()  # scattered, out-of-order blocks
    tables, used = [], 0
    for length in lengths:
        n = -(-length // block_size)
        tables.append(order[used:used + n])
        used += n
    width = max(len(t) for t in tables)
    # q rows interleaved with rows the kernel must not touch; q as a strided view, as the runner passes it
    qkv = torch.randn(2 * len(lengths), heads + 2 * kv_heads, head_dim, generator=generator)
    q = qkv[:, :heads]
    rows = torch.arange(0, 2 * len(lengths), 2)
    out = torch.full((2 * len(lengths), heads, head_dim), 7.0)
    torch.ops.sluice.paged_decode_attention(
        q, k_pool, v_pool, torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        torch.tensor(lengths, dtype=torch.int32), rows, out, block_size, 1 / math.sqrt(head_dim))
    for i, (length, table) in enumerate(zip(lengths, tables, strict=True)):
        expected = _reference(q[2 * i], k_pool.float(), v_pool.float(), table, length, block_size)
        torch.testing.assert_close(out[2 * i], expected, rtol=1e-5, atol=1e-5)
        assert torch.all(out[2 * i + 1] == 7.0)  # rows without a query are left alone


def test_kernel_rejects_a_table_outside_the_pool() -> None:
    k_pool = torch.zeros(8, 1, 16)
    with pytest.raises(RuntimeError, match="outside the KV pool"):
        torch.ops.sluice.paged_decode_attention(
            torch.zeros(1, 1, 16), k_pool, k_pool.clone(), torch.tensor([[5]], dtype=torch.int32),
            torch.tensor([3], dtype=torch.int32), torch.tensor([0]), torch.zeros(1, 1, 16), 4, 0.25)


@pytest.mark.parametrize("native", [True, False])
def test_engine_paths_match_reference(native: bool) -> None:
    model = make_model(seed=3)
    engine = make_engine(model, native_kernels=native, max_num_batched_tokens=24)  # chunked prefills too
    assert engine.runner.paged_kernel is native
    prompts = {f"r{i}": make_prompt(n, seed=40 + i) for i, n in enumerate([1, 6, 19, 33, 50])}
    sinks = {rid: submit(engine, rid, p, greedy(12)) for rid, p in prompts.items()}
    engine.run_until_done()
    for rid, sink in sinks.items():
        assert sink.error is None
        assert sink.tokens == reference_greedy(model, prompts[rid], 12), rid
