"""The batched paged engine must produce, token for token, what a plain full-recompute forward produces."""

from __future__ import annotations

import pytest

from engine.request import FinishReason
from tests.unit.engine_factories import (
    greedy,
    make_engine,
    make_model,
    make_prompt,
    reference_greedy,
    submit,
)


@pytest.fixture(scope="module")
def model():
    return make_model()


def _check(model, sinks: dict, prompts: dict, max_tokens: int) -> None:
    for rid, sink in sinks.items():
        assert sink.error is None, sink.error
        assert sink.finished is FinishReason.LENGTH
        assert sink.tokens == reference_greedy(model, prompts[rid], max_tokens), rid


def test_mixed_length_batch_matches_reference(model) -> None:
    engine = make_engine(model)
    prompts = {f"r{i}": make_prompt(n, seed=i) for i, n in enumerate([3, 17, 40, 5, 1, 33])}
    sinks = {rid: submit(engine, rid, p, greedy(10)) for rid, p in prompts.items()}
    engine.run_until_done()
    _check(model, sinks, prompts, 10)
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks
    assert all(b.ref_count == 0 for b in engine.blocks.blocks)


def test_requests_joining_mid_flight_match_reference(model) -> None:
    engine = make_engine(model)
    prompts = {f"r{i}": make_prompt(n, seed=10 + i) for i, n in enumerate([9, 21, 4, 30])}
    sinks = {rid: submit(engine, rid, prompts[rid], greedy(12)) for rid in ("r0", "r1")}
    for _ in range(5):
        engine.step()
    assert 0 < len(sinks["r0"].tokens) < 12  # r0 is mid-decode when the others join
    sinks |= {rid: submit(engine, rid, prompts[rid], greedy(12)) for rid in ("r2", "r3")}
    engine.step()
    assert engine.stats().last_batch_size == 4  # joined the running batch, not queued behind it
    engine.run_until_done()
    _check(model, sinks, prompts, 12)


def test_prefix_cache_hit_skips_prefill_and_matches_reference(model) -> None:
    engine = make_engine(model)
    shared = make_prompt(22, seed=99)
    prompts = {"a": shared + make_prompt(5, seed=1), "b": shared + make_prompt(7, seed=2)}
    sinks = {"a": submit(engine, "a", prompts["a"], greedy(8))}
    engine.run_until_done()
    sinks["b"] = submit(engine, "b", prompts["b"], greedy(8))
    engine.run_until_done()
    assert sinks["a"].cached_tokens == 0
    assert sinks["b"].cached_tokens == 20  # five full 4-token blocks of the 22-token shared prefix
    _check(model, sinks, prompts, 8)
    stats = engine.stats()
    assert stats.prefix_hit_tokens == 20 and stats.prefix_queried_tokens == len(prompts["a"]) + len(prompts["b"])


def test_identical_prompt_never_serves_its_last_token_from_cache(model) -> None:
    engine = make_engine(model)
    prompt = make_prompt(16, seed=5)  # exactly four full blocks
    first = submit(engine, "x", prompt, greedy(4))
    engine.run_until_done()
    second = submit(engine, "y", prompt, greedy(4))
    engine.run_until_done()
    assert second.cached_tokens == 12  # the block holding the last prompt token is recomputed
    assert first.tokens == second.tokens == reference_greedy(model, prompt, 4)


def test_preemption_under_block_pressure_matches_reference(model) -> None:
    engine = make_engine(model, num_blocks=14, enable_prefix_caching=False)
    prompts = {f"r{i}": make_prompt(10, seed=40 + i) for i in range(4)}
    sinks = {rid: submit(engine, rid, p, greedy(16)) for rid, p in prompts.items()}
    engine.run_until_done()
    assert engine.stats().preemptions > 0
    _check(model, sinks, prompts, 16)
    assert engine.blocks.num_free_blocks == 14


def test_chunked_prefill_matches_reference(model) -> None:
    engine = make_engine(model, max_num_batched_tokens=7)
    prompts = {"long": make_prompt(45, seed=7), "short": make_prompt(3, seed=8)}
    sinks = {rid: submit(engine, rid, p, greedy(6)) for rid, p in prompts.items()}
    engine.step()
    assert engine.stats().last_batch_tokens == 7  # the budget caps the step; the long prompt continues next step
    engine.run_until_done()
    _check(model, sinks, prompts, 6)


def test_cancelled_request_leaves_within_one_step_and_frees_blocks(model) -> None:
    engine = make_engine(model)
    keep = submit(engine, "keep", make_prompt(6, seed=1), greedy(20))
    gone = submit(engine, "gone", make_prompt(6, seed=2), greedy(20))
    for _ in range(3):
        engine.step()
    produced = len(gone.tokens)
    gone.cancelled = True
    engine.step()
    assert gone.finished is FinishReason.CANCELLED and len(gone.tokens) == produced
    assert engine.blocks.block_ids("gone") == []
    assert engine.stats().cancellations == 1
    engine.run_until_done()
    assert keep.finished is FinishReason.LENGTH and len(keep.tokens) == 20
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks


def test_one_bad_request_fails_alone(model) -> None:
    engine = make_engine(model)
    good = submit(engine, "good", make_prompt(5, seed=3), greedy(5))
    # a bad-words id outside the vocabulary makes this request's sampling raise, in the middle of a shared step
    bad = submit(engine, "bad", make_prompt(5, seed=4), greedy(5, bad_token_seqs=[[10**6]]))
    engine.run_until_done()
    assert isinstance(bad.error, IndexError) and bad.finished is None
    assert good.finished is FinishReason.LENGTH
    assert good.tokens == reference_greedy(model, make_prompt(5, seed=3), 5)
    assert engine.blocks.num_free_blocks == engine.blocks.num_blocks


def test_end_id_stops_and_is_not_emitted(model) -> None:
    engine = make_engine(model)
    prompt = make_prompt(8, seed=21)
    expected = reference_greedy(model, prompt, 6)
    sink = submit(engine, "e", prompt, greedy(6, end_id=expected[2]))
    engine.run_until_done()
    assert sink.finished is FinishReason.STOP
    assert sink.tokens == expected[: expected.index(expected[2])]


def test_small_steps_run_on_one_thread_large_ones_on_max_threads(model) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        engine = make_engine(model, max_threads=2, parallel_min_tokens=8)
        submit(engine, "long", make_prompt(12, seed=3), greedy(3))
        engine.step()  # a 12-token prefill
        assert torch.get_num_threads() == 2
        engine.step()  # one decode token
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
