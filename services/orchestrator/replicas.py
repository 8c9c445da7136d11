"""Which Triton replica serves a request: prefix affinity by rendezvous hashing, bounded by load, around dead replicas.

Each replica keeps its own KV cache, so a prompt is cheap only where its prefix was computed before. Requests that
share a prefix should therefore meet on one replica:

- the affinity key is the conversation id when the request belongs to a stored conversation (its history grows turn
  by turn on one replica), else a hash of the prompt's first `affinity_blocks` KV blocks — in chat traffic, the
  system prompt and the start of the conversation;
- rendezvous (highest-random-weight) hashing ranks the replicas for a key: every key has a stable preference order,
  and when a replica leaves or comes back only the keys that ranked it first move;
- bounded load: the first replica in that order whose in-flight count is at most `load_factor` × the mean + 1 takes
  the request, so one hot prefix cannot pile onto one replica while the others idle;
- health: each replica has its own circuit breaker (a failure before the first token opens it, the request moves to
  the next replica in order) and a readiness flag kept by a periodic probe; a replica comes back when it is ready
  again and a trial request succeeds.

The `random` strategy (a plain load balancer's) exists as the benchmark's baseline.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from engine.block_manager import DEFAULT_BLOCK_SIZE
from services.common.circuit_breaker import BreakerState, CircuitBreaker

STRATEGIES = ("affinity", "random")

# Set by the conversations service for the request it is serving: the conversation's id is its affinity key.
conversation_affinity: ContextVar[str | None] = ContextVar("sluice_conversation_affinity", default=None)


@dataclass(frozen=True, slots=True)
class ReplicaPolicy:
    strategy: str = "affinity"
    affinity_blocks: int = 8  # KV blocks of the prompt's start that make its key (64 tokens of 8)
    kv_block_size: int = DEFAULT_BLOCK_SIZE  # the engine's block size in tokens (the model repository's kv_block_size)
    load_factor: float = 1.25  # bounded load: skip a replica above load_factor × mean in-flight + 1
    failure_threshold: int = 1  # failures before the first token that mark a replica down
    cool_down_s: float = 5.0  # a down replica gets a trial request after this long (if its probe says ready)
    probe_interval_s: float = 2.0  # how often every replica's readiness is checked

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"replica strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.affinity_blocks < 1 or self.kv_block_size < 1:
            raise ValueError("affinity_blocks and kv_block_size must be at least 1")
        if self.load_factor < 1.0:
            raise ValueError(f"load_factor must be at least 1, got {self.load_factor}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ReplicaPolicy:
        """The `routing.replicas` section of the catalog file."""
        raw = raw or {}
        base = cls()
        return cls(strategy=str(raw.get("strategy", base.strategy)),
                   affinity_blocks=int(raw.get("affinity_blocks", base.affinity_blocks)),
                   kv_block_size=int(raw.get("kv_block_size", base.kv_block_size)),
                   load_factor=float(raw.get("load_factor", base.load_factor)),
                   failure_threshold=int(raw.get("failure_threshold", base.failure_threshold)),
                   cool_down_s=float(raw.get("cool_down_s", base.cool_down_s)),
                   probe_interval_s=float(raw.get("probe_interval_s", base.probe_interval_s)))


@dataclass(slots=True)
class Replica:
    name: str  # its gRPC endpoint, host:port
    breaker: CircuitBreaker
    in_flight: int = 0
    ready: bool = True  # the last readiness probe's answer (assumed ready until a probe says otherwise)
    started: int = 0  # requests sent to it, for metrics and tests

    @property
    def routable(self) -> bool:
        """Worth sending a request to: ready, and its breaker is closed or due a trial."""
        return self.ready and self.breaker.state is not BreakerState.OPEN


def affinity_key(prompt_ids: Sequence[int], *, model: str, block_size: int, blocks: int,
                 conversation: str | None = None) -> bytes:
    """The request's affinity key: its conversation, else its first `blocks` KV blocks (the whole prompt when it is
    shorter). The model is part of the key, so each deployment's traffic spreads on its own."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(model.encode())
    if conversation:
        digest.update(b"\x00conversation\x00" + conversation.encode())
    else:
        head = prompt_ids[: blocks * block_size]
        digest.update(b"\x00prefix\x00" + b"".join(int(t).to_bytes(4, "little", signed=True) for t in head))
    return digest.digest()


def rendezvous_score(key: bytes, replica: str) -> int:
    return int.from_bytes(hashlib.blake2b(key + b"\x00" + replica.encode(), digest_size=8).digest(), "big")


@dataclass
class ReplicaSelector:
    """The Triton replicas and the order to try them in for a request. Every replica serves the whole model
    repository, so one selector serves every deployment (the model is part of the key; in-flight counts cover all
    of a replica's work). Not thread-safe: use it from the orchestrator's event loop."""

    names: Sequence[str]
    policy: ReplicaPolicy = field(default_factory=ReplicaPolicy)
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"replicas need distinct names, got {list(self.names)}")
        self.replicas = [Replica(name, CircuitBreaker(failure_threshold=self.policy.failure_threshold,
                                                      cool_down_s=self.policy.cool_down_s, clock=self.clock))
                         for name in self.names]
        self._by_name = {replica.name: replica for replica in self.replicas}

    def get(self, name: str) -> Replica:
        return self._by_name[name]

    def key(self, prompt_ids: Sequence[int], model: str, conversation: str | None = None) -> bytes:
        return affinity_key(prompt_ids, model=model, block_size=self.policy.kv_block_size,
                            blocks=self.policy.affinity_blocks, conversation=conversation)

    def order(self, key: bytes) -> list[Replica]:
        """The routable replicas in the order to try them: the chosen one first, then the rest as fallbacks (in
        rendezvous order for `affinity`, so a key's fallback is stable too). Empty when none is routable."""
        live = [replica for replica in self.replicas if replica.routable]
        if self.policy.strategy == "random":
            self.rng.shuffle(live)
            return live
        ranked = sorted(live, key=lambda replica: rendezvous_score(key, replica.name), reverse=True)
        if len(ranked) < 2:
            return ranked
        limit = self.policy.load_factor * sum(r.in_flight for r in ranked) / len(ranked) + 1
        chosen = next((r for r in ranked if r.in_flight <= limit), min(ranked, key=lambda r: r.in_flight))
        return [chosen, *(r for r in ranked if r is not chosen)]

    def retry_after(self) -> float:
        """Seconds until some replica may be tried again (at least 1)."""
        waits = [replica.breaker.retry_after() for replica in self.replicas if replica.ready]
        return max(1.0, min(waits, default=self.policy.probe_interval_s))

    # -- feedback ----------------------------------------------------------------------------------------------------
    def started(self, replica: Replica) -> None:
        replica.in_flight += 1
        replica.started += 1

    def finished(self, replica: Replica, *, failed: bool | None) -> None:
        """`failed`: True when the replica failed the request, False when it served it, None when the outcome says
        nothing about the replica (the client went away, the request was invalid)."""
        replica.in_flight = max(0, replica.in_flight - 1)
        if failed is True:
            replica.breaker.record_failure()
        elif failed is False:
            replica.breaker.record_success()
