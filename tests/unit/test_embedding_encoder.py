"""The compact MiniLM encoder reproduces sentence-transformers' all-MiniLM-L6-v2 embeddings (reference values were
taken from SentenceTransformer(<package model dir>).encode(..., normalize_embeddings=True))."""

from __future__ import annotations

import numpy as np
import pytest

from services.retrieval.embedding_model import model_dir
from services.retrieval.encoder import SentenceEncoder


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(model_dir(), threads=1)


def test_matches_sentence_transformers_reference(encoder: SentenceEncoder) -> None:
    vectors, tokens = encoder.encode(["Hello world", "The quick brown fox jumps over the lazy dog."])
    np.testing.assert_allclose(vectors[0, :4], [-0.03447728, 0.03102326, 0.00673499, 0.02610897], atol=1e-5)
    np.testing.assert_allclose(vectors[1, :4], [0.04393359, 0.05893441, 0.04817836, 0.0775481], atol=1e-5)
    assert tokens.tolist() == [4, 12]  # [CLS] hello world [SEP]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batching_and_padding_do_not_change_results_and_long_texts_truncate(encoder: SentenceEncoder) -> None:
    texts = ["short", "a somewhat longer sentence about retrieval", "word " * 400]
    together, tokens = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert tokens[2] == 256
