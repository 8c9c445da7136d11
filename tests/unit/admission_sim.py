"""A discrete-event model of a continuous-batching engine behind the real Router, on a fake clock: enough to replay
the loads of issue S9 (closed-loop streams, Poisson overloads, mixed tiers) through admission control in
milliseconds of CPU, deterministically.

The engine schedules like engine/scheduler.py: every step the running sequences decode one token each, then waiting
prompts are prefilled (chunked) within the step's token budget, by priority class then arrival. A step takes
`step_s + prefill_token_s × prefilled tokens + decode_s × decodes` (fitted to the CPU engine: ≈ 500 tok/s at 16
streams, TTFT of a lone 143-token prompt ≈ 30 ms).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import ApiError
from services.orchestrator.admission import AdmissionPolicy
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.routing import Reservation, Router, RoutingPolicy

PRIORITY = {"free": 0, "plus": 1, "enterprise": 2}
MODEL = "demo"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class EngineModel:
    token_budget: int = 512
    max_seqs: int = 64
    step_s: float = 0.005
    prefill_token_s: float = 0.00015
    decode_s: float = 0.0017


@dataclass(slots=True)
class SimRequest:
    tier: str
    prompt: int
    output: int
    arrival: float
    client: int | None = None  # the closed-loop client that sent it (None: open-loop)
    reservation: Reservation | None = None
    shed: bool = False
    computed: int = 0  # prompt tokens prefilled
    generated: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.arrival

    @property
    def tpot(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.first_token_at) / max(1, self.output - 1)


@dataclass
class Simulation:
    """One deployment; `admission=None` sends straight to the engine (Triton direct)."""

    admission: AdmissionPolicy | None
    engine: EngineModel = field(default_factory=EngineModel)
    clock: Clock = field(default_factory=Clock)
    router: Router = field(init=False)
    done: list[SimRequest] = field(default_factory=list)
    _waiting: list[tuple[tuple[int, float, int], SimRequest]] = field(default_factory=list)
    _running: list[SimRequest] = field(default_factory=list)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        deployment = Deployment(name="demo-v1", triton_model="llm", checkpoint_dir=Path("/nowhere"), tokenizer=None,
                                context_window=1024, max_queue=64)
        catalog = ModelCatalog([ModelEntry(MODEL, [(deployment, 100)])])
        policy = RoutingPolicy(admission=self.admission or AdmissionPolicy(enabled=False))
        self.router = Router(catalog, policy, clock=self.clock)

    # -- the engine --------------------------------------------------------------------------------------------------
    def _arrive(self, request: SimRequest) -> None:
        self.done.append(request)
        if self.admission is not None:
            try:
                request.reservation = self.router.route(MODEL, request_id="r", admission_tier=request.tier,
                                                        reserve=True).reservation
            except ApiError as error:
                if error.status != 503:
                    raise
                request.shed = True
                return
        key = (-PRIORITY[request.tier], request.arrival, next(self._order))
        heapq.heappush(self._waiting, (key, request))

    def _step(self) -> list[SimRequest]:
        """Runs one step; returns the requests that finished in it."""
        model, budget = self.engine, self.engine.token_budget
        decodes = [r for r in self._running if r.computed == r.prompt]
        budget -= len(decodes)
        prefills: list[tuple[SimRequest, int]] = []
        for request in self._running:  # unfinished chunked prefills continue first
            if request.computed < request.prompt and budget > 0:
                chunk = min(budget, request.prompt - request.computed)
                prefills.append((request, chunk))
                budget -= chunk
        while self._waiting and budget > 0 and len(self._running) < model.max_seqs:
            _, request = heapq.heappop(self._waiting)
            chunk = min(budget, request.prompt)
            self._running.append(request)
            prefills.append((request, chunk))
            budget -= chunk
        prefilled = sum(chunk for _, chunk in prefills)
        self.clock.now += model.step_s + model.prefill_token_s * prefilled + model.decode_s * len(decodes)
        finished = []
        for request in decodes:
            request.generated += 1
        for request, chunk in prefills:
            request.computed += chunk
            if request.computed == request.prompt:
                request.generated += 1  # the step that completes a prompt samples its first token
        for request in decodes + [r for r, _ in prefills]:
            if request.generated == 1 and request.first_token_at is None:
                request.first_token_at = self.clock.now
                if request.reservation is not None:
                    request.reservation.start()
            if request.generated >= request.output and request in self._running:
                self._running.remove(request)
                request.finished_at = self.clock.now
                finished.append(request)
                if request.reservation is not None:
                    self.router.finished(request.reservation, ok=True)
        return finished

    # -- loads -------------------------------------------------------------------------------------------------------
    def run(self, arrivals: list[SimRequest], *, closed_loop_requests: int = 0,
            think_s: float = 0.01) -> list[SimRequest]:
        """Serves `arrivals` until all are done and returns every request, shed ones included, by arrival time. A
        request with a `client` is closed-loop: when it ends (or is shed) its client sends the next one like it,
        until `closed_loop_requests` closed-loop requests were sent in all."""
        start = len(self.done)
        sent = sum(r.client is not None for r in arrivals)
        pending = [(r.arrival, next(self._order), r) for r in arrivals]
        heapq.heapify(pending)

        def follow_up(previous: SimRequest) -> None:
            nonlocal sent
            if previous.client is not None and sent < closed_loop_requests:
                sent += 1
                request = SimRequest(previous.tier, previous.prompt, previous.output, self.clock.now + think_s,
                                     previous.client)
                heapq.heappush(pending, (request.arrival, next(self._order), request))

        while pending or self._waiting or self._running:
            while pending and pending[0][0] <= self.clock.now:
                request = heapq.heappop(pending)[2]
                self._arrive(request)
                if request.shed:
                    follow_up(request)
            if self._waiting or self._running:
                for request in self._step():
                    follow_up(request)
            elif pending:
                self.clock.now = max(self.clock.now, pending[0][0])
        return sorted(self.done[start:], key=lambda r: r.arrival)

    def closed_loop(self, streams: int, requests: int, tier: str = "enterprise", prompt: int = 143,
                    output: int = 128) -> list[SimRequest]:
        """`streams` clients sending `requests` in all, each the next as soon as its last one ended (or was shed)."""
        return self.run(streams_at(self.clock.now, streams, tier, prompt, output), closed_loop_requests=requests)


def streams_at(start: float, streams: int, tier: str = "enterprise", prompt: int = 143,
               output: int = 128) -> list[SimRequest]:
    """The first requests of `streams` closed-loop clients, all sent at `start`."""
    return [SimRequest(tier, prompt, output, start, client) for client in range(streams)]


def poisson_arrivals(start: float, rate: float, seconds: float, seed: int, prompt: tuple[int, int] = (16, 48),
                     output: int = 16, tiers: tuple[str, ...] = ("free", "plus", "enterprise")) -> list[SimRequest]:
    """Open-loop arrivals at `rate` per second for `seconds`, the tiers in turn."""
    rng, at, arrivals = random.Random(seed), start, []
    while (at := at + rng.expovariate(rate)) < start + seconds:
        arrivals.append(SimRequest(tiers[len(arrivals) % len(tiers)], rng.randint(*prompt), output, at))
    return arrivals


def served_fraction(requests: list[SimRequest]) -> float:
    return sum(not r.shed for r in requests) / len(requests)


def within(requests: list[SimRequest], ttft_s: float) -> float:
    """The share of the requests that were served with a TTFT within `ttft_s`."""
    return sum(not r.shed and r.ttft is not None and r.ttft <= ttft_s for r in requests) / len(requests)
