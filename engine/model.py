"""Compact Llama-family decoder in plain PyTorch, for training and CPU inference.

Parameter names match Hugging Face's ``LlamaForCausalLM`` so ``load_state_dict`` works on any HF Llama checkpoint,
and RoPE uses HF's rotate_half layout so logits match transformers on the same weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

_HF_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
)


@dataclass
class ModelArgs:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads:
                raise ValueError("hidden_size must be divisible by num_attention_heads when head_dim is absent")
            self.head_dim = self.hidden_size // self.num_attention_heads
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for RoPE")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError("rms_norm_eps and rope_theta must be positive")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("linear", "llama3", "default"):
                raise ValueError(f"unsupported rope_scaling type {kind!r}")
            if kind != "default" and float(self.rope_scaling.get("factor", 0)) <= 0:
                raise ValueError("rope_scaling.factor must be positive")

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelArgs:
        return cls(**{k: cfg[k] for k in _HF_KEYS if k in cfg and cfg[k] is not None})

    def to_hf_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
                               "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16"}
        cfg.update({k: getattr(self, k) for k in _HF_KEYS})
        return cfg


@dataclass
class KVCache:
    """Contiguous per-layer cache; k[i], v[i]: [B, n_kv_heads, max_len, head_dim]."""

    k: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


def rope_inv_freq(args: ModelArgs) -> torch.Tensor:
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))  # [dim/2]
    rs = args.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        inv_freq = inv_freq / float(rs["factor"])
    elif kind == "llama3":
        factor, low, high = float(rs["factor"]), float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old_len = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start_pos: int) -> torch.Tensor:
    """Causal attention. q: [B, H, S, Dh]; k, v: [B, H, T, Dh] with T = start_pos + S. Swappable (paged KV later)."""
    s, t = q.shape[2], k.shape[2]
    if start_pos == 0 and s == t:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if s == 1:
        return F.scaled_dot_product_attention(q, k, v)
    q_pos = torch.arange(start_pos, start_pos + s, device=q.device)[:, None]  # [S, 1]
    mask = torch.arange(t, device=q.device)[None, :] <= q_pos  # [S, T]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        d, hd = args.hidden_size, args.head_dim
        self.n_heads, self.n_kv, self.head_dim = args.num_attention_heads, args.num_key_value_heads, hd
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int,
                cache_kv: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        b, s, _ = x.shape  # x: [B, S, D]
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, S, Dh]
        k = self.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)  # [B, KV, S, Dh]
        v = self.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache_kv is not None:
            ck, cv = cache_kv
            ck[:, :, start_pos:start_pos + s] = k.to(ck.dtype)
            cv[:, :, start_pos:start_pos + s] = v.to(cv.dtype)
            k, v = ck[:, :, :start_pos + s], cv[:, :, :start_pos + s]  # [B, KV, T, Dh]
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # [B, H, T, Dh]
        out = attend(q, k.to(q.dtype), v.to(q.dtype), start_pos if cache_kv is not None else 0)  # [B, H, S, Dh]
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int,
                cache_kv: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, start_pos, cache_kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.num_hidden_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)


class Llama(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.model = LlamaModel(args)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.inv_freq = rope_inv_freq(args)  # [Dh/2] float32; a plain attribute so .to(dtype) keeps it fp32

    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> KVCache:
        a = self.args
        dtype = dtype or self.model.embed_tokens.weight.dtype
        device = device or self.model.embed_tokens.weight.device
        shape = (batch_size, a.num_key_value_heads, max_len, a.head_dim)
        n = a.num_hidden_layers
        return KVCache([torch.zeros(shape, dtype=dtype, device=device) for _ in range(n)],
                       [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n)])

    def forward(self, input_ids: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        _, s = input_ids.shape  # input_ids: [B, S]
        if cache is not None and start_pos + s > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} positions, need {start_pos + s}")
        x = self.model.embed_tokens(input_ids)  # [B, S, D]
        pos = torch.arange(start_pos, start_pos + s, device=x.device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq.to(x.device)[None, :]  # [S, Dh/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [S, Dh]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        for i, layer in enumerate(self.model.layers):
            kv = (cache.k[i], cache.v[i]) if cache is not None else None
            x = layer(x, cos, sin, start_pos, kv)
        return self.lm_head(self.model.norm(x)).float()  # [B, S, V]


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> tuple[Llama, ModelArgs]:
    path = Path(path)
    args = ModelArgs.from_hf_config(json.loads((path / "config.json").read_text()))
    index = path / "model.safetensors.index.json"
    if index.exists():
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(path / shard)))
    else:
        state = load_file(str(path / "model.safetensors"))
    state = {k: t.to(dtype) for k, t in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if args.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model = Llama(args)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (args.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    return model.to(device=device, dtype=dtype).eval(), args


def save_checkpoint(model: Llama, args: ModelArgs, path: str | Path, dtype: torch.dtype = torch.bfloat16) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: t.detach().to("cpu", dtype).contiguous() for k, t in model.state_dict().items()}
    if args.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = args.to_hf_config()
    cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
