"""all-MiniLM-L6-v2 as a compact torch module: BERT encoder → mean pooling over the attention mask → L2 norm.

Written out (about 80 lines) rather than loaded through `transformers`, which takes ~4 s longer to import and build:
the Triton `embedder` becomes ready in about the time torch takes to import. Weights load straight from the package's
safetensors file, so it runs offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from services.retrieval.embedding_model import MAX_SEQ_TOKENS


@dataclass(frozen=True, slots=True)
class BertArgs:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12

    @classmethod
    def from_config(cls, path: Path) -> BertArgs:
        c = json.loads(path.read_text())
        return cls(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c["intermediate_size"], c["max_position_embeddings"], c["type_vocab_size"], c["layer_norm_eps"])


class Layer(nn.Module):
    def __init__(self, a: BertArgs) -> None:
        super().__init__()
        self.heads = a.heads
        self.query, self.key, self.value = (nn.Linear(a.hidden, a.hidden) for _ in range(3))
        self.attn_out = nn.Linear(a.hidden, a.hidden)
        self.attn_norm = nn.LayerNorm(a.hidden, eps=a.eps)
        self.up = nn.Linear(a.hidden, a.intermediate)
        self.down = nn.Linear(a.intermediate, a.hidden)
        self.out_norm = nn.LayerNorm(a.hidden, eps=a.eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape  # x: [B, S, D]; bias: [B, 1, 1, S] (0 or -inf on padding)
        q, k, v = (p(x).view(b, s, self.heads, d // self.heads).transpose(1, 2) for p in (self.query, self.key,
                                                                                           self.value))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, S, D/H]
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(b, s, d)))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class MiniLM(nn.Module):
    def __init__(self, a: BertArgs) -> None:
        super().__init__()
        self.word = nn.Embedding(a.vocab_size, a.hidden)
        self.position = nn.Embedding(a.max_positions, a.hidden)
        self.token_type = nn.Embedding(a.type_vocab, a.hidden)
        self.norm = nn.LayerNorm(a.hidden, eps=a.eps)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(positions)[None] + self.token_type(torch.zeros_like(ids)))
        bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(mask == 0, float("-inf"))[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        m = mask.unsqueeze(-1).to(x.dtype)  # mean pooling over real tokens, then unit length
        return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=-1)


def _rename(name: str) -> str | None:
    """Checkpoint (HF BertModel) names → this module's names; None for tensors we do not use (pooler)."""
    if name.startswith("pooler.") or name.endswith("position_ids"):
        return None
    table = {"embeddings.word_embeddings.": "word.", "embeddings.position_embeddings.": "position.",
             "embeddings.token_type_embeddings.": "token_type.", "embeddings.LayerNorm.": "norm.",
             "attention.self.query.": "query.", "attention.self.key.": "key.", "attention.self.value.": "value.",
             "attention.output.dense.": "attn_out.", "attention.output.LayerNorm.": "attn_norm.",
             "intermediate.dense.": "up.", "output.dense.": "down.", "output.LayerNorm.": "out_norm.",
             "encoder.layer.": "layers."}
    for old, new in table.items():
        name = name.replace(old, new)
    return name


class SentenceEncoder:
    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = MiniLM(BertArgs.from_config(model_dir / "config.json"))
        state = {new: t for old, t in load_file(str(model_dir / "model.safetensors")).items()
                 if (new := _rename(old)) is not None}
        self.model.load_state_dict(state, strict=True)
        self.model.eval()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_SEQ_TOKENS)
        self.tokenizer.no_padding()

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns (embeddings [N, 384] float32 unit vectors, tokens per text incl. [CLS]/[SEP] after truncation)."""
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.asarray([len(e.ids) for e in encodings], dtype=np.int32)
        out = np.zeros((len(texts), self.model.word.embedding_dim), dtype=np.float32)
        order = np.argsort(-lengths)  # similar lengths together: less padding per sub-batch
        for start in range(0, len(order), 32):
            rows = order[start:start + 32]
            width = int(lengths[rows].max())
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                n = lengths[row]
                ids[i, :n] = torch.tensor(encodings[row].ids)
                mask[i, :n] = 1
            out[rows] = self.model(ids, mask).numpy()
        return out, lengths
