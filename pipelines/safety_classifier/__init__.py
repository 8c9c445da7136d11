"""Safety classifier v2: generated training data → a small head on MiniLM token embeddings (see README.md)."""
