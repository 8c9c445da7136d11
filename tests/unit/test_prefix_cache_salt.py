"""Prefix-cache namespaces: a tenant reuses its own blocks, never another tenant's."""

from __future__ import annotations

import pytest

from engine.request import GenerationRequest
from services.orchestrator.prefix_cache import cache_salt_id
from tests.unit.engine_factories import RecordingSink, greedy, make_engine, make_model, make_prompt


def test_salt_is_stable_per_tenant_and_absent_when_shared() -> None:
    assert cache_salt_id("acme") == cache_salt_id("acme")
    assert cache_salt_id("acme") != cache_salt_id("globex")
    assert 0 <= cache_salt_id("acme") < 2**64
    assert cache_salt_id("acme", "shared") is None
    with pytest.raises(ValueError, match="prefix_cache"):
        cache_salt_id("acme", "everyone")


def _cached_tokens(engine, request_id: str, prompt: list[int], salt: int | None) -> int:
    sink = RecordingSink()
    engine.submit(GenerationRequest(request_id, prompt, greedy(2), cache_salt_id=salt), sink)
    engine.run_until_done()
    return sink.cached_tokens


def test_engine_reuses_blocks_only_within_one_salt() -> None:
    engine = make_engine(make_model())
    prompt = make_prompt(40, seed=5)  # ten 4-token blocks
    acme, globex = cache_salt_id("acme"), cache_salt_id("globex")
    assert _cached_tokens(engine, "a1", prompt, acme) == 0
    assert _cached_tokens(engine, "a2", prompt, acme) == 36  # every full block but the one holding the last token
    assert _cached_tokens(engine, "g1", prompt, globex) == 0  # same prompt, other tenant: computed afresh
    assert _cached_tokens(engine, "s1", prompt, None) == 0  # the shared namespace is a third one
    assert _cached_tokens(engine, "s2", prompt, None) == 36
