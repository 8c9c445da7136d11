"""Who may reuse whose prefix-cache blocks.

A reused prefix makes the first token come sooner, so a client that can time its requests learns whether someone
else sent the same prefix recently. By default every tenant therefore gets its own namespace in the engine's prefix
cache (TensorRT-LLM's `cache_salt_id`, mixed into the block hashes); a deployment whose catalog entry says
`prefix_cache: shared` (one organisation, or a platform-wide system prompt worth sharing) skips the salt.
"""

from __future__ import annotations

import hashlib

SCOPES = ("tenant", "shared")


def cache_salt_id(tenant: str | None, scope: str = "tenant") -> int | None:
    """A stable 64-bit namespace for the tenant's blocks; None when the deployment shares its cache."""
    if scope not in SCOPES:
        raise ValueError(f"prefix_cache must be one of {SCOPES}, got {scope!r}")
    if scope == "shared":
        return None
    return int.from_bytes(hashlib.blake2b((tenant or "default").encode(), digest_size=8).digest(), "little")
