from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.orchestrator.response_cache import CachedResponse, ResponseCache, cache_key, sampling_key
from services.orchestrator.triton_llm import LLMParams, build_inputs


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
    assert cache_key(**{**base, "tools": True}) != key


def test_key_lists_every_sampling_parameter_and_nothing_else() -> None:
    """A new LLMParams field must be placed deliberately: in the key (it changes the output) or out of it."""
    outside = {"cache_salt_id"}  # the prefix-cache namespace: the tenant, already in the key, decides it
    fields = {f.name for f in dataclasses.fields(LLMParams)}
    assert set(sampling_key(LLMParams(max_tokens=1, end_id=2))) == fields - outside
    assert not hasattr(LLMParams(max_tokens=1, end_id=2), "priority")  # scheduling is passed to stream() on its own


def test_prefix_cache_salt_does_not_split_the_key() -> None:
    params = LLMParams(max_tokens=8, end_id=2, temperature=0.0, top_k=1)
    base = dict(tenant="t", deployment="d", prompt_ids=[1, 2, 3], stops=[])
    assert cache_key(params=params, **base) == cache_key(params=dataclasses.replace(params, cache_salt_id=7), **base)


def test_priority_reaches_triton_as_its_own_input() -> None:
    inputs = {tensor.name(): tensor for tensor in build_inputs([1, 2], LLMParams(max_tokens=4, end_id=2), priority=7)}
    assert inputs["priority"].datatype() == "INT32"
    assert np.frombuffer(inputs["priority"]._raw_content, dtype=np.int32).tolist() == [7]


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
