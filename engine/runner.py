"""The model runner: one forward pass over all scheduled tokens of all sequences, reading and writing K/V through
block tables into one preallocated paged pool.

Token-wise work (embeddings, projections, MLP) runs on the flattened [T, D] batch with no padding, with the
projections that read the same input fused into one matmul (q/k/v, gate/up) and RoPE applied to q and k together from
a precomputed table. Attention is the only per-sequence part:

- sequences computing one token (decodes) attend straight out of the pool through their block tables with the native
  paged-attention kernel (engine/kernels), all in one call per layer; where the kernel is not available (not built,
  not fp32 on CPU) they are bucketed by context length and attended over their gathered contexts instead;
- sequences computing several (prefill chunks) attend with a causal mask offset by what is already cached; a chunk
  with nothing cached attends over its own keys and values without reading the pool back.

In the last layer only the rows whose logits are sampled go on past attention (o_proj, MLP, norm, lm_head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine import kernels
from engine.model import Llama, rotate_half
from engine.scheduler import ScheduledBatch


def kv_bytes_per_block(model: Llama, block_size: int, dtype: torch.dtype) -> int:
    a = model.args
    return 2 * a.num_hidden_layers * block_size * a.num_key_value_heads * a.head_dim * dtype.itemsize


@dataclass(slots=True)
class KVPool:
    """k[layer], v[layer]: [num_blocks * block_size, n_kv_heads, head_dim]; slot = block_id * block_size + offset."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    block_size: int

    @classmethod
    def allocate(cls, model: Llama, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device) -> KVPool:
        a = model.args
        shape = (num_blocks * block_size, a.num_key_value_heads, a.head_dim)
        layers = a.num_hidden_layers
        return cls([torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
                   [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)], block_size)


@dataclass(slots=True)
class DecodeGroup:
    """Decoding sequences of similar context length, attended together over their gathered contexts (fallback)."""

    rows: torch.Tensor  # [Bg] token rows
    context: torch.Tensor  # [Bg * Lg] slots of their contexts, padded with slot 0
    length: int  # Lg, the longest context in the group
    mask: torch.Tensor | None  # [Bg, 1, 1, Lg] True where the slot is real; None when no padding


@dataclass(slots=True)
class PagedDecode:
    """Every decoding sequence of the step, for the paged-attention kernel."""

    rows: torch.Tensor  # [B] int64 token rows
    block_tables: torch.Tensor  # [B, W] int32, padded with block 0
    context_lens: torch.Tensor  # [B] int32, the new token included


# A decode group's longest context may be at most this much longer than its shortest: bounds the padding the
# batched attention wastes when contexts of very different lengths decode together.
GROUP_LENGTH_RATIO = 1.5


def _decode_groups(rows: list[int], tables: list[list[int]], lengths: list[int], block_size: int,
                   device: torch.device) -> list[DecodeGroup]:
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and lengths[i] <= GROUP_LENGTH_RATIO * lengths[buckets[-1][0]]:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    groups = []
    for bucket in buckets:
        longest = max(lengths[i] for i in bucket)
        table = _padded_tables([tables[i] for i in bucket], torch.long)
        pos = torch.arange(longest)
        context = table[:, pos // block_size] * block_size + pos % block_size  # [Bg, Lg]
        real = pos[None, :] < torch.tensor([lengths[i] for i in bucket], dtype=torch.long)[:, None]
        padded = not bool(real.all())
        context = torch.where(real, context, 0) if padded else context
        groups.append(DecodeGroup(
            rows=torch.tensor([rows[i] for i in bucket], dtype=torch.long, device=device),
            context=context.reshape(-1).to(device), length=longest,
            mask=real[:, None, None, :].to(device) if padded else None))
    return groups


def _padded_tables(tables: list[list[int]], dtype: torch.dtype) -> torch.Tensor:
    width = max(len(t) for t in tables)
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=dtype)


@dataclass(slots=True)
class Prefill:
    first_row: int
    num_rows: int
    cached: int  # context tokens before this chunk, read back from the pool
    context: torch.Tensor | None  # [cached + num_rows] slots; None when nothing is cached


@dataclass(slots=True)
class AttentionPlan:
    """How one step's flattened tokens map onto sequences and KV slots."""

    slots: torch.Tensor  # [T] where each new token's K/V is written
    positions: torch.Tensor  # [T]
    paged: PagedDecode | None  # decodes for the kernel
    decode_groups: list[DecodeGroup]  # decodes for the fallback path, bucketed by context length
    prefills: list[Prefill]  # multi-token sequences
    sample_rows: torch.Tensor  # [S] rows whose logits are sampled (the last token of sequences that reached the end)


def plan_attention(batch: ScheduledBatch, block_tables: list[list[int]], block_size: int, device: torch.device,
                   paged_kernel: bool = False) -> tuple[list[int], AttentionPlan]:
    token_ids: list[int] = []
    slots: list[int] = []
    positions: list[int] = []
    decode_rows: list[int] = []
    decode_tables: list[list[int]] = []
    decode_lengths: list[int] = []
    prefills: list[Prefill] = []
    sample_rows: list[int] = []
    for seq, n, table in zip(batch.seqs, batch.num_tokens, block_tables, strict=True):
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
        row = len(token_ids)
        if n == 1:
            token_ids.append(seq.output_ids[start - len(seq.prompt_ids)] if start >= len(seq.prompt_ids)
                             else seq.prompt_ids[start])
            slots.append(table[start // block_size] * block_size + start % block_size)
            positions.append(start)
            decode_rows.append(row)
            decode_tables.append(table)
            decode_lengths.append(end)
        else:
            token_ids.extend(seq.all_token_ids[start:end])
            # slots of positions 0..end-1: this chunk's are written, the whole context is read back if any is cached
            context_slots = [table[p // block_size] * block_size + p % block_size for p in range(end)]
            slots.extend(context_slots[start:])
            positions.extend(range(start, end))
            context = torch.tensor(context_slots, dtype=torch.long, device=device) if start else None
            prefills.append(Prefill(row, n, start, context))
        if end == seq.num_tokens:
            sample_rows.append(row + n - 1)
    paged, groups = None, []
    if decode_rows and paged_kernel:
        paged = PagedDecode(rows=torch.tensor(decode_rows, dtype=torch.long),
                            block_tables=_padded_tables(decode_tables, torch.int32),
                            context_lens=torch.tensor(decode_lengths, dtype=torch.int32))
    elif decode_rows:
        groups = _decode_groups(decode_rows, decode_tables, decode_lengths, block_size, device)
    plan = AttentionPlan(
        slots=torch.tensor(slots, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        paged=paged, decode_groups=groups, prefills=prefills,
        sample_rows=torch.tensor(sample_rows, dtype=torch.long, device=device))
    return token_ids, plan


@dataclass(slots=True)
class FusedLayer:
    """One decoder layer's weights, with the projections of a shared input concatenated."""

    input_norm: torch.Tensor  # [D]
    qkv: torch.Tensor  # [(H + 2 KV) Dh, D]
    o: torch.Tensor  # [D, H Dh]
    post_norm: torch.Tensor  # [D]
    gate_up: torch.Tensor  # [2 I, D]
    down: torch.Tensor  # [D, I]


def projection(weight: torch.Tensor, matmul_dtype: torch.dtype | None) -> torch.Tensor:
    """A projection's weight as the runner multiplies by it: in `matmul_dtype` when one is set."""
    weight = weight.detach()
    return weight.to(matmul_dtype).contiguous() if matmul_dtype is not None else weight


def fuse_layers(model: Llama, matmul_dtype: torch.dtype | None = None) -> list[FusedLayer]:
    """`matmul_dtype`: the projections' weights in this dtype (e.g. bfloat16 for AMX); norms stay as they are."""
    def proj(weight: torch.Tensor) -> torch.Tensor:
        return projection(weight, matmul_dtype)

    layers = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(FusedLayer(
            input_norm=layer.input_layernorm.weight.detach(),
            qkv=proj(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous()),
            o=proj(attn.o_proj.weight),
            post_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up=proj(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous()),
            down=proj(mlp.down_proj.weight)))
    return layers


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T in the weight's dtype, returned in x's: bfloat16 products on float32 activations."""
    if weight.dtype == x.dtype:
        return F.linear(x, weight)
    return F.linear(x.to(weight.dtype), weight).to(x.dtype)


class ModelRunner:
    def __init__(self, model: Llama, pool: KVPool, native_kernels: bool = True,
                 matmul_dtype: torch.dtype | None = None) -> None:
        self.model = model
        self.pool = pool
        self.device = model.model.embed_tokens.weight.device
        self.dtype = model.model.embed_tokens.weight.dtype
        a = model.args
        self.n_heads, self.n_kv, self.head_dim = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        self.hidden, self.intermediate, self.eps = a.hidden_size, a.intermediate_size, a.rms_norm_eps
        self.scale = 1.0 / math.sqrt(a.head_dim)
        self.layers = fuse_layers(model, matmul_dtype)
        self.lm_head = projection(model.lm_head.weight, matmul_dtype)
        positions = torch.arange(a.max_position_embeddings, dtype=torch.float32)
        freqs = positions[:, None] * model.inv_freq[None, :]  # [P, Dh/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :].to(self.device)  # [P, 1, Dh]
        self.rope_cos, self.rope_sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        probe = torch.empty(0, dtype=self.dtype, device=self.device)
        self.paged_kernel = native_kernels and kernels.paged_decode_available(probe, pool.k[0])

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch, block_tables: list[list[int]]) -> torch.Tensor:
        """Runs the step; returns float32 logits [S, V] for the sequences that sample a token this step, in batch
        order."""
        token_ids, plan = plan_attention(batch, block_tables, self.pool.block_size, self.device, self.paged_kernel)
        model = self.model
        x = F.embedding(torch.tensor(token_ids, dtype=torch.long, device=self.device),
                        model.model.embed_tokens.weight)  # [T, D]
        cos, sin = self.rope_cos[plan.positions], self.rope_sin[plan.positions]  # [T, 1, Dh]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            attended = self._attention(layer, F.rms_norm(x, (self.hidden,), layer.input_norm, self.eps), cos, sin,
                                       plan, i)
            if i == last:  # only the sampled rows matter past this layer's attention
                x, attended = x[plan.sample_rows], attended[plan.sample_rows]
            x = x + linear(attended, layer.o)
            gate, up = linear(F.rms_norm(x, (self.hidden,), layer.post_norm, self.eps),
                              layer.gate_up).split(self.intermediate, dim=-1)
            x = x + linear(F.silu(gate) * up, layer.down)
        last_hidden = F.rms_norm(x, (self.hidden,), model.model.norm.weight, self.eps)  # [S, D]
        return linear(last_hidden, self.lm_head).float()  # [S, V]

    def _attention(self, layer: FusedLayer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   plan: AttentionPlan, index: int) -> torch.Tensor:
        """Returns the attention output before o_proj, [T, H * Dh]."""
        t, h, kv, dh = x.shape[0], self.n_heads, self.n_kv, self.head_dim
        qkv = linear(x, layer.qkv)  # [T, (H + 2 KV) Dh]
        qk = qkv[:, :(h + kv) * dh].view(t, h + kv, dh)
        qk = qk * cos + rotate_half(qk) * sin  # RoPE on q and k at once
        q, k = qk[:, :h], qk[:, h:]  # [T, H, Dh], [T, KV, Dh]
        v = qkv[:, (h + kv) * dh:].view(t, kv, dh)
        k_cache, v_cache = self.pool.k[index], self.pool.v[index]
        k_cache.index_copy_(0, plan.slots, k.to(k_cache.dtype))
        v_cache.index_copy_(0, plan.slots, v.to(v_cache.dtype))
        out = torch.empty((t, h, dh), dtype=q.dtype, device=q.device)
        if plan.paged is not None:
            p = plan.paged
            torch.ops.sluice.paged_decode_attention(q, k_cache, v_cache, p.block_tables, p.context_lens, p.rows, out,
                                                    self.pool.block_size, self.scale)
        for group in plan.decode_groups:
            b = group.rows.numel()
            qd = q[group.rows][:, :, None, :]  # [Bg, H, 1, Dh]
            shape = (b, group.length, kv, dh)
            kd = k_cache.index_select(0, group.context).view(shape).to(q.dtype).transpose(1, 2)  # [Bg, KV, L, Dh]
            vd = v_cache.index_select(0, group.context).view(shape).to(q.dtype).transpose(1, 2)
            od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=group.mask, enable_gqa=True)
            out[group.rows] = od[:, :, 0, :]
        for prefill in plan.prefills:
            rows = slice(prefill.first_row, prefill.first_row + prefill.num_rows)
            qp = q[rows].transpose(0, 1)[None]  # [1, H, n, Dh]
            if prefill.context is None:  # nothing cached: this chunk's own keys and values are the whole context
                kp, vp = k[rows].transpose(0, 1)[None], v[rows].transpose(0, 1)[None]  # [1, KV, n, Dh]
                op = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=True)
            else:
                context = prefill.context
                kp = k_cache.index_select(0, context).to(q.dtype).transpose(0, 1)[None]  # [1, KV, L, Dh]
                vp = v_cache.index_select(0, context).to(q.dtype).transpose(0, 1)[None]
                q_pos = torch.arange(prefill.cached, prefill.cached + prefill.num_rows, device=x.device)[:, None]
                mask = torch.arange(context.numel(), device=x.device)[None, :] <= q_pos  # [n, L]
                op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=True)
            out[rows] = op[0].transpose(0, 1)
        return out.view(t, h * dh)
