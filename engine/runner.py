"""The model runner: one forward pass over all scheduled tokens of all sequences, reading and writing K/V through
block tables into one preallocated paged pool.

Token-wise work (embeddings, projections, MLP) runs on the flattened [T, D] batch with no padding. Attention is the
only per-sequence part: sequences computing one token (decodes) are batched together over their gathered context;
sequences computing several (prefill chunks) attend with a causal mask offset by what is already cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    """Decoding sequences of similar context length, attended together over their gathered contexts."""

    rows: torch.Tensor  # [Bg] token rows
    context: torch.Tensor  # [Bg * Lg] slots of their contexts, padded with slot 0
    length: int  # Lg, the longest context in the group
    mask: torch.Tensor | None  # [Bg, 1, 1, Lg] True where the slot is real; None when no padding


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
        widest = max(len(tables[i]) for i in bucket)
        table = torch.zeros((len(bucket), widest), dtype=torch.long)
        for j, i in enumerate(bucket):
            table[j, :len(tables[i])] = torch.tensor(tables[i], dtype=torch.long)
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


@dataclass(slots=True)
class AttentionPlan:
    """How one step's flattened tokens map onto sequences and KV slots."""

    slots: torch.Tensor  # [T] where each new token's K/V is written
    positions: torch.Tensor  # [T]
    decode_groups: list[DecodeGroup]  # single-token sequences, bucketed by context length
    prefills: list[tuple[int, int, torch.Tensor]]  # (first row, number of rows, context slots) per multi-token seq
    sample_rows: torch.Tensor  # [S] rows whose logits are sampled (the last token of sequences that reached the end)


def plan_attention(batch: ScheduledBatch, block_tables: list[list[int]], block_size: int,
                   device: torch.device) -> tuple[list[int], AttentionPlan]:
    token_ids: list[int] = []
    slots: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    decode_rows: list[int] = []
    decode_tables: list[list[int]] = []
    decode_lengths: list[int] = []
    prefills: list[tuple[int, int, torch.Tensor]] = []
    sample_rows: list[int] = []
    for seq, n, table in zip(batch.seqs, batch.num_tokens, block_tables, strict=True):
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
        row = len(token_ids)
        token_ids.extend(seq.all_token_ids[start:end])
        pos = torch.arange(start, end)
        slots.append(torch.tensor(table, dtype=torch.long)[pos // block_size] * block_size + pos % block_size)
        positions.append(pos)
        if n == 1:
            decode_rows.append(row)
            decode_tables.append(table)
            decode_lengths.append(end)
        else:
            context = torch.arange(end)
            context_slots = torch.tensor(table, dtype=torch.long)[context // block_size] * block_size
            prefills.append((row, n, (context_slots + context % block_size).to(device)))
        if end == seq.num_tokens:
            sample_rows.append(row + n - 1)
    plan = AttentionPlan(
        slots=torch.cat(slots).to(device) if slots else torch.empty(0, dtype=torch.long, device=device),
        positions=torch.cat(positions).to(device) if positions else torch.empty(0, dtype=torch.long, device=device),
        decode_groups=_decode_groups(decode_rows, decode_tables, decode_lengths, block_size, device),
        prefills=prefills,
        sample_rows=torch.tensor(sample_rows, dtype=torch.long, device=device))
    return token_ids, plan


class ModelRunner:
    def __init__(self, model: Llama, pool: KVPool) -> None:
        self.model = model
        self.pool = pool
        self.device = model.model.embed_tokens.weight.device
        self.dtype = model.model.embed_tokens.weight.dtype
        a = model.args
        self.n_heads, self.n_kv, self.head_dim = a.num_attention_heads, a.num_key_value_heads, a.head_dim

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch, block_tables: list[list[int]]) -> torch.Tensor:
        """Runs the step; returns float32 logits [S, V] for the sequences that sample a token this step, in batch
        order."""
        token_ids, plan = plan_attention(batch, block_tables, self.pool.block_size, self.device)
        model = self.model
        x = model.model.embed_tokens(torch.tensor(token_ids, dtype=torch.long, device=self.device))  # [T, D]
        freqs = plan.positions.to(torch.float32)[:, None] * model.inv_freq.to(self.device)[None, :]  # [T, Dh/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # [T, 1, Dh]
        cos, sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        for i, layer in enumerate(model.model.layers):
            x = x + self._attention(layer.self_attn, layer.input_layernorm(x), cos, sin, plan, i)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        last = model.model.norm(x[plan.sample_rows])  # [S, D]
        return model.lm_head(last).float()  # [S, V]

    def _attention(self, attn: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   plan: AttentionPlan, layer: int) -> torch.Tensor:
        t = x.shape[0]
        q = attn.q_proj(x).view(t, self.n_heads, self.head_dim)  # [T, H, Dh]
        k = attn.k_proj(x).view(t, self.n_kv, self.head_dim)  # [T, KV, Dh]
        v = attn.v_proj(x).view(t, self.n_kv, self.head_dim)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k_cache, v_cache = self.pool.k[layer], self.pool.v[layer]
        k_cache[plan.slots] = k.to(k_cache.dtype)
        v_cache[plan.slots] = v.to(v_cache.dtype)
        out = torch.empty_like(q)  # [T, H, Dh]
        for group in plan.decode_groups:
            b = group.rows.numel()
            qd = q[group.rows][:, :, None, :]  # [Bg, H, 1, Dh]
            shape = (b, group.length, self.n_kv, self.head_dim)
            kd = k_cache.index_select(0, group.context).view(shape).to(q.dtype).transpose(1, 2)  # [Bg, KV, L, Dh]
            vd = v_cache.index_select(0, group.context).view(shape).to(q.dtype).transpose(1, 2)
            od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=group.mask, enable_gqa=True)
            out[group.rows] = od[:, :, 0, :]
        for row, n, context in plan.prefills:
            qp = q[row:row + n].transpose(0, 1)[None]  # [1, H, n, Dh]
            kp = k_cache.index_select(0, context).to(q.dtype).transpose(0, 1)[None]  # [1, KV, L, Dh]
            vp = v_cache.index_select(0, context).to(q.dtype).transpose(0, 1)[None]
            cached = context.numel() - n
            if cached == 0:
                op = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=True)
            else:
                q_pos = torch.arange(cached, cached + n, device=x.device)[:, None]
                mask = torch.arange(context.numel(), device=x.device)[None, :] <= q_pos  # [n, L]
                op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=True)
            out[row:row + n] = op[0].transpose(0, 1)
        return attn.o_proj(out.reshape(t, self.n_heads * self.head_dim))
