"""Replica selection without processes: affinity keys, rendezvous stability and spread, bounded load, and failover
through ReplicatedLLM with fake Triton clients and a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from services.common.errors import ApiError, invalid, unavailable
from services.orchestrator.replicas import ReplicaPolicy, ReplicaSelector, affinity_key, conversation_affinity
from services.orchestrator.replicated_llm import ReplicatedLLM
from services.orchestrator.triton_llm import LLMChunk, LLMParams, TokenTally

BLOCK = 16
URLS = ["replica-a:8001", "replica-b:8101", "replica-c:8201"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prompt(system: int, user: int, length: int = 200) -> list[int]:
    """A prompt whose first 4 blocks depend only on `system` and whose tail depends on `user`."""
    rng_system, rng_user = random.Random(f"s{system}"), random.Random(f"u{user}")
    head = [rng_system.randrange(1000) for _ in range(4 * BLOCK)]
    return head + [rng_user.randrange(1000) for _ in range(length - len(head))]


def selector(names: list[str] = URLS, **policy: object) -> ReplicaSelector:
    return ReplicaSelector(names, ReplicaPolicy(**policy), Clock())


def first_choice(chooser: ReplicaSelector, key: bytes) -> str:
    return chooser.order(key)[0].name


# -- keys ------------------------------------------------------------------------------------------------------------
def test_key_covers_the_first_blocks_only() -> None:
    key = lambda ids, **kw: affinity_key(ids, model="m", block_size=BLOCK, blocks=4, **kw)  # noqa: E731
    assert key(prompt(1, 1)) == key(prompt(1, 2)) == key(prompt(1, 3, length=500))
    assert key(prompt(1, 1)) != key(prompt(2, 1))
    assert affinity_key(prompt(1, 1), model="a", block_size=BLOCK, blocks=4) != \
        affinity_key(prompt(1, 1), model="b", block_size=BLOCK, blocks=4)
    short = [5, 6, 7]
    assert key(short) == key(list(short)) != key([5, 6, 8])  # a prompt shorter than the key: all of it


def test_conversation_id_wins_over_the_prompt() -> None:
    key = lambda ids, conversation: affinity_key(ids, model="m", block_size=BLOCK, blocks=4,  # noqa: E731
                                                 conversation=conversation)
    assert key(prompt(1, 1), "conv-1") == key(prompt(2, 2), "conv-1")
    assert key(prompt(1, 1), "conv-1") != key(prompt(1, 1), "conv-2")


# -- rendezvous ------------------------------------------------------------------------------------------------------
def test_same_prefix_same_replica_and_keys_spread() -> None:
    chooser = selector()
    for system in range(20):
        choices = {first_choice(chooser, chooser.key(prompt(system, user), "m")) for user in range(10)}
        assert len(choices) == 1
    counts = Counter(first_choice(chooser, chooser.key([system], "m")) for system in range(3000))
    assert set(counts) == set(URLS)
    assert all(800 <= n <= 1200 for n in counts.values()), counts  # ~1000 each


def test_only_a_removed_replicas_keys_move() -> None:
    full, without_c = selector(), selector(URLS[:2])
    keys = [full.key([system], "m") for system in range(600)]
    before = {key: first_choice(full, key) for key in keys}
    after = {key: first_choice(without_c, key) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert moved and all(before[key] == URLS[2] for key in moved)
    assert len(moved) == sum(1 for key in keys if before[key] == URLS[2])


def test_a_down_replicas_keys_go_to_their_second_choice_and_come_back() -> None:
    chooser = selector()
    keys = [chooser.key([system], "m") for system in range(300)]
    orders = {key: [r.name for r in chooser.order(key)] for key in keys}
    a = chooser.get(URLS[0])
    a.ready = False
    for key in keys:
        expected = [name for name in orders[key] if name != URLS[0]]
        assert [r.name for r in chooser.order(key)] == expected
    a.ready = True
    assert all([r.name for r in chooser.order(key)] == orders[key] for key in keys)


# -- bounded load ----------------------------------------------------------------------------------------------------
def test_a_hot_prefix_spills_over_but_stays_bounded() -> None:
    chooser = selector(URLS[:2], load_factor=1.25)
    hot = chooser.key(prompt(7, 0), "m")
    preferred = chooser.order(hot)[0]
    for _ in range(40):  # 40 concurrent requests with one prefix, none finishing
        chooser.started(chooser.order(hot)[0])
    other = next(r for r in chooser.replicas if r is not preferred)
    assert preferred.in_flight > other.in_flight > 0
    mean = (preferred.in_flight + other.in_flight) / 2
    assert preferred.in_flight <= 1.25 * mean + 2


def test_an_idle_cluster_follows_affinity_exactly() -> None:
    chooser = selector()
    key = chooser.key(prompt(3, 0), "m")
    preferred = chooser.order(key)[0]
    chooser.started(preferred)  # one in flight: 1 <= 1.25 * 1/3 + 1, still preferred
    assert chooser.order(key)[0] is preferred
    chooser.finished(preferred, failed=False)
    assert preferred.in_flight == 0


def test_random_strategy_ignores_the_prefix() -> None:
    chooser = ReplicaSelector(URLS, ReplicaPolicy(strategy="random"), Clock(), random.Random(0))
    key = chooser.key(prompt(1, 0), "m")
    assert len({first_choice(chooser, key) for _ in range(60)}) == 3


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        ReplicaPolicy(strategy="round-robin")
    with pytest.raises(ValueError):
        ReplicaPolicy(load_factor=0.5)
    with pytest.raises(ValueError):
        ReplicaSelector(["a", "a"])
    assert ReplicaPolicy.from_dict({"load_factor": 1.5, "affinity_blocks": 2}) == \
        ReplicaPolicy(load_factor=1.5, affinity_blocks=2)


# -- failover through ReplicatedLLM ----------------------------------------------------------------------------------
class FakeTriton:
    """Streams `tokens` token ids, or fails with `error` after `fail_after` of them."""

    def __init__(self, tokens: int = 3, error: ApiError | None = None, fail_after: int = 0,
                 delay_s: float = 0.0) -> None:
        self.tokens, self.error, self.fail_after, self.delay_s = tokens, error, fail_after, delay_s
        self.calls = 0
        self.closed = 0
        self.ready = True

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams, model_name: str | None = None,
                     tally: TokenTally | None = None, priority: int = 0,
                     whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        self.calls += 1
        try:
            await asyncio.sleep(self.delay_s)
            for i in range(self.tokens):
                if self.error is not None and i == self.fail_after:
                    raise self.error
                yield LLMChunk([i], 0)
        finally:
            self.closed += 1

    async def is_ready(self) -> bool:
        return self.ready

    async def close(self) -> None:
        pass


PARAMS = LLMParams(max_tokens=3, end_id=2)


def replicated(fakes: dict[str, FakeTriton], clock: Clock | None = None, **policy: object) -> ReplicatedLLM:
    return ReplicatedLLM(list(fakes), policy=ReplicaPolicy(**policy), clock=clock or Clock(), clients=fakes)


async def collect(llm: ReplicatedLLM, ids: list[int]) -> list[int]:
    return [t for chunk in [c async for c in llm.stream("req", ids, PARAMS)] for t in chunk.token_ids]


def test_a_replica_that_refuses_is_marked_down_and_the_request_retried() -> None:
    clock = Clock()
    fakes = {url: FakeTriton() for url in URLS[:2]}
    llm = replicated(fakes, clock, cool_down_s=5.0)
    ids = prompt(1, 0)
    preferred, second = [r.name for r in llm.selector.order(llm.selector.key(ids, "tensorrt_llm"))]
    fakes[preferred].error = unavailable("The inference server is unavailable: AioRpcError")

    assert asyncio.run(collect(llm, ids)) == [0, 1, 2]
    assert (fakes[preferred].calls, fakes[second].calls) == (1, 1)
    assert not llm.selector.get(preferred).routable
    assert all(r.in_flight == 0 for r in llm.selector.replicas)

    asyncio.run(collect(llm, ids))  # while it is down, the prefix goes straight to its second choice
    assert (fakes[preferred].calls, fakes[second].calls) == (1, 2)

    fakes[preferred].error = None  # it recovers; after the cool-down a trial request brings it back
    clock.now += 5.0
    asyncio.run(collect(llm, ids))
    assert fakes[preferred].calls == 2 and llm.selector.get(preferred).routable
    assert llm.selector.get(preferred).breaker.state.value == "closed"


def test_a_failure_after_the_first_token_is_not_retried() -> None:
    fakes = {url: FakeTriton(error=unavailable("gone"), fail_after=1) for url in URLS[:2]}
    llm = replicated(fakes)
    with pytest.raises(ApiError) as failure:
        asyncio.run(collect(llm, prompt(1, 0)))
    assert failure.value.status == 503
    assert sum(f.calls for f in fakes.values()) == 1
    assert sum(not r.routable for r in llm.selector.replicas) == 1  # that replica is marked down all the same


def test_an_invalid_request_is_not_the_replicas_fault() -> None:
    fakes = {url: FakeTriton(error=invalid("bad", "messages")) for url in URLS[:2]}
    llm = replicated(fakes)
    with pytest.raises(ApiError) as failure:
        asyncio.run(collect(llm, prompt(1, 0)))
    assert failure.value.status == 400
    assert sum(f.calls for f in fakes.values()) == 1
    assert all(r.routable for r in llm.selector.replicas)


def test_every_replica_down_is_a_503_with_retry_after() -> None:
    fakes = {url: FakeTriton(error=unavailable("gone")) for url in URLS[:2]}
    llm = replicated(fakes, cool_down_s=5.0)
    with pytest.raises(ApiError):
        asyncio.run(collect(llm, prompt(1, 0)))
    assert sum(f.calls for f in fakes.values()) == 2
    with pytest.raises(ApiError) as failure:  # both open now: refused without calling anyone
        asyncio.run(collect(llm, prompt(1, 0)))
    assert failure.value.status == 503 and failure.value.retry_after >= 1.0
    assert sum(f.calls for f in fakes.values()) == 2


def test_the_probe_takes_a_replica_out_and_back() -> None:
    fakes = {url: FakeTriton() for url in URLS[:2]}
    llm = replicated(fakes)
    ids = prompt(4, 0)
    preferred = llm.selector.order(llm.selector.key(ids, "tensorrt_llm"))[0].name
    fakes[preferred].ready = False
    asyncio.run(llm.probe())
    asyncio.run(collect(llm, ids))
    assert fakes[preferred].calls == 0
    fakes[preferred].ready = True
    asyncio.run(llm.probe())
    asyncio.run(collect(llm, ids))
    assert fakes[preferred].calls == 1


def test_a_down_replica_is_back_when_its_probe_passes_after_the_cool_down() -> None:
    clock = Clock()
    fakes = {url: FakeTriton() for url in URLS[:2]}
    llm = replicated(fakes, clock, cool_down_s=5.0)
    ids = prompt(2, 0)
    preferred = llm.selector.order(llm.selector.key(ids, "tensorrt_llm"))[0]
    fakes[preferred.name].error = unavailable("gone")
    asyncio.run(collect(llm, ids))
    fakes[preferred.name].error = None
    asyncio.run(llm.probe())  # ready, but still cooling down
    assert not preferred.routable
    clock.now += 5.0
    asyncio.run(llm.probe())
    assert preferred.breaker.state.value == "closed"


def test_a_trial_request_abandoned_before_its_first_token_does_not_strand_the_replica() -> None:
    clock = Clock()
    fakes = {url: FakeTriton() for url in URLS[:2]}
    llm = replicated(fakes, clock, cool_down_s=5.0)
    ids = prompt(5, 0)
    preferred = llm.selector.order(llm.selector.key(ids, "tensorrt_llm"))[0]
    fakes[preferred.name].error = unavailable("gone")
    asyncio.run(collect(llm, ids))
    fakes[preferred.name].error, fakes[preferred.name].delay_s = None, 1.0
    clock.now += 5.0

    async def leave_before_the_first_token() -> None:
        task = asyncio.create_task(collect(llm, ids))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(leave_before_the_first_token())
    assert preferred.in_flight == 0 and not preferred.breaker.allow()  # its one trial is spent, outcome unknown
    asyncio.run(llm.probe())
    assert preferred.breaker.state.value == "closed"


def test_closing_the_stream_early_closes_the_replicas_stream() -> None:
    fakes = {url: FakeTriton(tokens=10) for url in URLS[:2]}
    llm = replicated(fakes)

    async def first_chunk_only() -> None:
        stream = llm.stream("req", prompt(1, 0), PARAMS)
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(first_chunk_only())
    assert sum(f.closed for f in fakes.values()) == 1
    assert all(r.in_flight == 0 and r.routable for r in llm.selector.replicas)


def test_a_conversation_sticks_to_one_replica_whatever_its_prompt() -> None:
    fakes = {url: FakeTriton() for url in URLS}
    llm = replicated(fakes)

    async def turns() -> None:
        conversation_affinity.set("conv-42")
        for turn in range(12):
            await collect(llm, prompt(turn, turn))

    asyncio.run(turns())
    assert sorted(f.calls for f in fakes.values()) == [0, 0, 12]
