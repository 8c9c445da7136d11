"""Exact-match response cache for deterministic requests (greedy, or sampled with a fixed seed).

The key covers the tenant, the deployment, the prompt as token ids (so equivalent message lists that render to the
same prompt share an entry), every sampling parameter that changes the output, the stop strings and whether tool
markup is kept. It lists those fields by name: a field added to LLMParams joins the key only when it is added here,
so scheduling (priority) and the prefix-cache namespace (covered by the tenant) never split the cache. Entries
expire after a TTL and the cache is bounded (LRU). A hit is replayed as the same sequence of deltas, so streaming
clients see a normal stream.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.orchestrator.triton_llm import LLMParams


@dataclass(frozen=True, slots=True)
class CachedResponse:
    deltas: tuple[tuple[str, int], ...]  # (text, token count) as originally streamed
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def sampling_key(params: LLMParams) -> dict:
    """The sampling parameters that change what the engine produces."""
    return {"max_tokens": params.max_tokens, "end_id": params.end_id, "temperature": params.temperature,
            "top_p": params.top_p, "top_k": params.top_k, "seed": params.seed,
            "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
            "repetition_penalty": params.repetition_penalty, "min_tokens": params.min_tokens,
            "guide_type": params.guide_type, "guide": params.guide,  # a constrained answer is another answer
            "logprobs": params.logprobs, "top_logprobs": params.top_logprobs}


def cache_key(*, tenant: str, deployment: str, prompt_ids: Sequence[int], params: LLMParams, stops: Sequence[str],
              tools: bool = False) -> str:
    payload = json.dumps({"tenant": tenant, "deployment": deployment, "prompt": list(prompt_ids),
                          "sampling": sampling_key(params), "stops": list(stops), "tools": tools},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, max_entries: int = 1024, ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries and ttl_s must be positive")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedResponse | None:
        item = self._entries.get(key)
        if item is None or item[0] < self.clock():
            if item is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return item[1]

    def put(self, key: str, response: CachedResponse) -> None:
        self._entries[key] = (self.clock() + self.ttl_s, response)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
