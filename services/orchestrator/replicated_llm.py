"""TritonLLM's streaming interface over several Triton replicas: each request goes to the replica its prefix (or
conversation) prefers (replicas.py), and moves to the next one if that replica fails before the first token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import yaml

from services.common.circuit_breaker import BreakerState
from services.common.errors import ApiError, unavailable
from services.common.metrics import METRICS
from services.common.settings import Settings
from services.orchestrator.replicas import ReplicaPolicy, ReplicaSelector, conversation_affinity
from services.orchestrator.triton_llm import LLM_MODEL, LLMChunk, LLMParams, TokenTally, TritonLLM

log = logging.getLogger(__name__)


class ReplicatedLLM:
    def __init__(self, urls: Sequence[str], model_name: str = LLM_MODEL, policy: ReplicaPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic, clients: Mapping[str, TritonLLM] | None = None) -> None:
        """`clients` replaces the Triton client of each URL (tests)."""
        policy = policy or ReplicaPolicy()
        self.model_name = model_name
        self.selector = ReplicaSelector(list(urls), policy, clock)
        self.clients = dict(clients) if clients is not None else {
            url: TritonLLM(url, model_name, kv_block_size=policy.kv_block_size) for url in urls}
        self._probing: asyncio.Task | None = None

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        for client in self.clients.values():
            await client.close()

    async def is_ready(self) -> bool:
        return any(await asyncio.gather(*(client.is_ready() for client in self.clients.values())))

    async def probe(self) -> None:
        """Asks every replica whether its LLM slot is ready. One that is not gets no requests until it is; one marked
        down whose cool-down has passed is back as soon as it answers ready (no request has to be the trial)."""
        answers = await asyncio.gather(*(client.is_ready() for client in self.clients.values()))
        for name, ready in zip(self.clients, answers, strict=True):
            replica = self.selector.get(name)
            if replica.ready != ready:
                log.warning("Triton replica %s is %s", name, "ready again" if ready else "not ready")
            replica.ready = ready
            if ready and replica.breaker.state is BreakerState.HALF_OPEN:
                replica.breaker.record_success()

    def start_probing(self) -> None:
        """Probes every `probe_interval_s` in the background until close()."""
        async def loop() -> None:
            while True:
                await self.probe()
                await asyncio.sleep(self.selector.policy.probe_interval_s)

        self._probing = asyncio.create_task(loop())

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams,
                     model_name: str | None = None, tally: TokenTally | None = None,
                     priority: int = 0, whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        model = model_name or self.model_name
        attempts = self.selector.order(self.selector.key(prompt_ids, model, conversation_affinity.get()))
        failure: ApiError | None = None
        for replica in attempts:
            if not replica.breaker.allow():  # a half-open replica whose one trial request is already out
                continue
            self.selector.started(replica)
            tokens = self.clients[replica.name].stream(request_id, prompt_ids, params, model, tally, priority=priority,
                                                          whole_words=whole_words)
            produced, failed = False, None  # failed stays None when the client went away before the first token
            try:
                async for chunk in tokens:
                    produced = True
                    yield chunk
                failed = False
                return
            except ApiError as error:
                failed = error.status == 503  # a 4xx is the request's own fault: the replica did answer
                if not failed or produced:  # after the first token the client has part of the answer: no retry
                    raise
                failure = error
                log.warning("request %s: Triton replica %s failed before the first token (%s); trying the next",
                            request_id, replica.name, error.message)
            finally:
                await tokens.aclose()  # stops the request on that replica if it is still running
                self.selector.finished(replica, failed=False if failed is None and produced else failed)
        raise failure or unavailable("No Triton replica is available.", retry_after=self.selector.retry_after())


def load_replica_policy(settings: Settings) -> ReplicaPolicy:
    """The `routing.replicas` section of the catalog file (defaults when there is none)."""
    raw = (yaml.safe_load(settings.catalog_path.read_text()) or {}) if settings.catalog_path.exists() else {}
    return ReplicaPolicy.from_dict((raw.get("routing") or {}).get("replicas"))


def triton_llm_for(settings: Settings) -> TritonLLM | ReplicatedLLM:
    """The orchestrator's LLM client: one Triton, or (SLUICE_TRITON_REPLICAS > 1) every replica, probed in the
    background, with per-replica gauges on the metrics endpoint. Call it from the event loop that serves."""
    if settings.triton_replicas == 1:
        return TritonLLM(settings.triton_grpc_url, kv_block_size=load_replica_policy(settings).kv_block_size)
    llm = ReplicatedLLM(settings.triton_grpc_urls, policy=load_replica_policy(settings))
    replicas = llm.selector.replicas
    METRICS.gauges.watch("sluice_triton_replica_in_flight", "LLM requests in flight per Triton replica", "replica",
                         lambda: {r.name: r.in_flight for r in replicas})
    METRICS.gauges.watch("sluice_triton_replica_up", "1 while a Triton replica is routable (ready, breaker not open)",
                         "replica", lambda: {r.name: float(r.routable) for r in replicas})
    llm.start_probing()
    return llm
