from __future__ import annotations

import pytest

from services.orchestrator.response_cache import CachedResponse, ResponseCache, cache_key
from services.orchestrator.triton_llm import LLMParams


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def response(text: str) -> CachedResponse:
    return CachedResponse(((text, 1),), "stop", 5, 1)


def test_key_covers_tenant_deployment_prompt_params_and_stops() -> None:
    base = dict(tenant="t", deployment="d", prompt_ids=[1, 2, 3], params=LLMParams(max_tokens=8, end_id=2),
                stops=[])
    key = cache_key(**base)
    assert key == cache_key(**base)
    for change in ({"tenant": "u"}, {"deployment": "e"}, {"prompt_ids": [1, 2, 4]}, {"stops": ["x"]},
                   {"params": LLMParams(max_tokens=9, end_id=2)}, {"params": LLMParams(max_tokens=8, end_id=2,
                                                                                      seed=1)}):
        assert cache_key(**{**base, **change}) != key, change


def test_ttl_expiry_and_lru_bound() -> None:
    clock = Clock()
    cache = ResponseCache(max_entries=2, ttl_s=10, clock=clock)
    cache.put("a", response("A"))
    cache.put("b", response("B"))
    assert cache.get("a") == response("A")  # a is now most recent
    cache.put("c", response("C"))  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    clock.now = 11
    assert cache.get("a") is None and len(cache) == 1
    assert (cache.hits, cache.misses) == (3, 2)


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError):
        ResponseCache(max_entries=0)
