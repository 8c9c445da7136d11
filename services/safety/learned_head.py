"""The learned safety classifier: all-MiniLM-L6-v2's token embeddings → a small convolutional head → a probability
per category. Trained by `python -m pipelines.safety_classifier build`; its weights are committed beside the Triton
model (model_repository/safety_classifier/head/).

Why not the sentence embeddings: a full MiniLM forward pass over 1,000 characters takes ~80 ms on one core here
(~25 ms in int8), far over the input check's 10 ms budget, and the output guard classifies a window every ~12
tokens. The head reads MiniLM's (frozen) input embeddings, so synonyms land near each other, and a width-3
convolution sees short phrases ("kill the process" vs "kill the neighbour"); max and mean pooling over the text make
it length-independent.

The convolution is linear in the embeddings, so each of its three taps is folded into the vocabulary once at load
time (`fold_taps`: [WIDTH, V, H], 47 MB): scoring a text is then a gather and two additions per token instead of a
[T, 3D] × [3D, H] product — about 0.1 ms for 256 characters, which matters because the output guard scores a
window every few dozen characters of every stream. `head_logits` is the unfolded reference (and training's twin).

Scores are calibrated so each category's threshold (chosen on the training data's validation split) lands on the
policy's default threshold for that category: a policy that keeps the defaults gets the chosen operating point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from services.common.settings import REPO_ROOT

HEAD_DIR = REPO_ROOT / "model_repository" / "safety_classifier" / "head"
EMBEDDING_TENSOR = "embeddings.word_embeddings.weight"
MAX_TOKENS = 2048  # longer texts are scored by their first MAX_TOKENS tokens per window call (the service windows)
WIDTH = 3          # tokens per convolution window


@dataclass(frozen=True, slots=True)
class HeadWeights:
    conv: np.ndarray     # [WIDTH * D, H]
    conv_bias: np.ndarray  # [H]
    hidden: np.ndarray   # [2H, H2]
    hidden_bias: np.ndarray  # [H2]
    out: np.ndarray      # [H2, C]
    out_bias: np.ndarray  # [C]


def gelu(x: np.ndarray) -> np.ndarray:
    """tanh approximation, as torch.nn.functional.gelu(approximate="tanh") (the head is trained with it)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def windows(x: np.ndarray) -> np.ndarray:
    """[T, D] → [T, WIDTH * D]: each token with its left and right neighbour (zeros past the ends)."""
    padded = np.zeros((x.shape[0] + WIDTH - 1, x.shape[1]), dtype=x.dtype)
    padded[1:-1] = x
    return np.concatenate([padded[i:i + x.shape[0]] for i in range(WIDTH)], axis=1)


def head_logits(weights: HeadWeights, token_vectors: list[np.ndarray]) -> np.ndarray:
    """Per text its token embeddings [T, D] → logits [N, C]. All texts' tokens go through one matrix product."""
    stacked = np.concatenate([windows(v) for v in token_vectors], axis=0)
    h = gelu(stacked @ weights.conv + weights.conv_bias)  # [sum T, H]
    pooled = np.empty((len(token_vectors), 2 * h.shape[1]), dtype=np.float32)
    start = 0
    for row, v in enumerate(token_vectors):
        part = h[start:start + v.shape[0]]
        pooled[row, :h.shape[1]] = part.max(axis=0)
        pooled[row, h.shape[1]:] = part.mean(axis=0)
        start += v.shape[0]
    z = gelu(pooled @ weights.hidden + weights.hidden_bias)
    return z @ weights.out + weights.out_bias


def fold_taps(weights: HeadWeights, embeddings: np.ndarray) -> np.ndarray:
    """[WIDTH, V, H]: tap i's contribution of each vocabulary entry (tap 0 reads the left neighbour, 1 the token,
    2 the right neighbour; `windows` lays the taps out in that order)."""
    dim = embeddings.shape[1]
    return np.stack([embeddings @ weights.conv[i * dim:(i + 1) * dim] for i in range(WIDTH)])


def folded_logits(weights: HeadWeights, taps: np.ndarray, token_ids: list[np.ndarray]) -> np.ndarray:
    """`head_logits` computed from folded taps: per text its token ids [T] → logits [N, C]."""
    hidden = taps.shape[2]
    pooled = np.empty((len(token_ids), 2 * hidden), dtype=np.float32)
    for row, ids in enumerate(token_ids):
        h = taps[1, ids] + weights.conv_bias
        h[1:] += taps[0, ids[:-1]]
        h[:-1] += taps[2, ids[1:]]
        h = gelu(h)
        pooled[row, :hidden] = h.max(axis=0)
        pooled[row, hidden:] = h.mean(axis=0)
    z = gelu(pooled @ weights.hidden + weights.hidden_bias)
    return z @ weights.out + weights.out_bias


def calibrate(probabilities: np.ndarray, chosen: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Monotone piecewise-linear map per column sending `chosen` to `targets` (and 0 → 0, 1 → 1)."""
    below = probabilities * (targets / chosen)
    above = targets + (probabilities - chosen) * ((1.0 - targets) / (1.0 - chosen))
    return np.where(probabilities <= chosen, below, above).astype(np.float32)


class LearnedSafetyHead:
    def __init__(self, head_dir: Path = HEAD_DIR, embedding_dir: Path | None = None) -> None:
        if embedding_dir is None:
            from services.retrieval.embedding_model import model_dir

            embedding_dir = model_dir()
        meta = json.loads((head_dir / "head.json").read_text())
        self.categories: tuple[str, ...] = tuple(meta["categories"])
        self.thresholds = np.asarray([meta["thresholds"][c] for c in self.categories], dtype=np.float32)
        tensors = load_file(str(head_dir / "head.safetensors"))
        self.weights = HeadWeights(**{name: tensors[name].astype(np.float32) for name in HeadWeights.__slots__})
        self._load_inputs(embedding_dir)
        self.taps = fold_taps(self.weights, self.embeddings)

    def _load_inputs(self, embedding_dir: Path) -> None:
        """MiniLM's WordPiece tokenizer and its input token embeddings (the only tensor read from its weights)."""
        with safe_open(str(embedding_dir / "model.safetensors"), "np") as f:
            self.embeddings = f.get_tensor(EMBEDDING_TENSOR).astype(np.float32)  # [V, D]
        self.tokenizer = Tokenizer.from_file(str(embedding_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """[N, C] uncalibrated probabilities (what the thresholds in head.json refer to)."""
        if not texts:
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        ids = [np.asarray(i, dtype=np.intp) for i in self.token_ids(texts)]
        logits = folded_logits(self.weights, self.taps, ids)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def scores(self, texts: list[str], policy_thresholds: np.ndarray) -> np.ndarray:
        """[N, C] scores whose crossing of `policy_thresholds` is the chosen operating point."""
        return calibrate(self.probabilities(texts), self.thresholds, policy_thresholds)
