"""Scheduler on CPU, no model: exact per-step token splits, admission order, block ids and preemption victims.

A step is simulated as the engine does it: schedule, record the computed tokens, then append a fake output token to
every sequence whose tokens are now all computed."""

from __future__ import annotations

from engine.scheduler import ScheduledBatch, Scheduler
from engine.sequence import SequenceStatus
from tests.unit.engine_factories import make_scheduler, make_seq

FAKE_TOKEN = 7


def step(scheduler: Scheduler) -> ScheduledBatch:
    batch = scheduler.schedule()
    assert batch.total_tokens <= scheduler.config.max_num_batched_tokens
    assert len(scheduler.running) <= scheduler.config.max_num_seqs
    scheduler.after_step(batch)
    for seq in batch.seqs:
        if seq.num_computed_tokens == seq.num_tokens:
            seq.append_token(FAKE_TOKEN)
    return batch


def split(batch: ScheduledBatch) -> list[tuple[str, int]]:
    return [(seq.request_id, n) for seq, n in zip(batch.seqs, batch.num_tokens, strict=True)]


def ids(batch_or_seqs: ScheduledBatch | list) -> list[str]:
    seqs = batch_or_seqs.seqs if isinstance(batch_or_seqs, ScheduledBatch) else batch_or_seqs
    return [seq.request_id for seq in seqs]


# -- token budget and sequence limit -------------------------------------------------------------------------------
def test_long_prompt_is_chunked_within_the_token_budget() -> None:
    sched = make_scheduler(num_blocks=64, block_size=4, max_num_batched_tokens=16)
    a, b = make_seq("a", 40, arrival_ns=0), make_seq("b", 10, arrival_ns=1)
    sched.add(a)
    sched.add(b)

    assert split(step(sched)) == [("a", 16)]  # budget spent: b is not admitted
    assert sched.blocks.block_ids("a") == [0, 1, 2, 3]
    assert ids(sched.waiting) == ["b"]
    assert split(step(sched)) == [("a", 16)]
    assert split(step(sched)) == [("a", 8), ("b", 8)]  # a's last chunk, b's first
    assert (a.num_computed_tokens, a.output_ids) == (40, [FAKE_TOKEN])
    assert (b.num_computed_tokens, b.output_ids) == (8, [])
    assert sched.blocks.block_ids("a") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert sched.blocks.block_ids("b") == [10, 11]
    assert split(step(sched)) == [("a", 1), ("b", 2)]
    assert split(step(sched)) == [("a", 1), ("b", 1)]
    assert sched.blocks.block_ids("a") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
    assert sched.blocks.block_ids("b") == [10, 11, 13]
    assert (a.num_tokens, b.num_tokens) == (43, 12)


def test_running_decodes_go_before_new_prefills() -> None:
    sched = make_scheduler(num_blocks=64, block_size=4, max_num_batched_tokens=8)
    d = make_seq("d", 4, arrival_ns=0)
    sched.add(d)
    assert split(step(sched)) == [("d", 4)]
    sched.add(make_seq("h", 20, priority=9, arrival_ns=1))  # higher priority, but d is already running
    assert split(step(sched)) == [("d", 1), ("h", 7)]
    assert ids(sched.running) == ["d", "h"]


def test_running_chunked_prefill_does_not_stall_running_decodes() -> None:
    sched = make_scheduler(num_blocks=64, block_size=4, max_num_batched_tokens=8)
    sched.add(make_seq("d", 4, arrival_ns=0))
    step(sched)
    sched.add(make_seq("h", 20, priority=9, arrival_ns=1))
    assert split(step(sched)) == [("d", 1), ("h", 7)]
    assert split(step(sched)) == [("d", 1), ("h", 7)]  # today: [("h", 8)], d gets nothing
    assert split(step(sched)) == [("d", 1), ("h", 6)]


def test_budget_spent_by_decodes_admits_nobody() -> None:
    sched = make_scheduler(max_num_batched_tokens=2)
    sched.add(make_seq("a", 1, arrival_ns=0))
    sched.add(make_seq("b", 1, arrival_ns=1))
    assert split(step(sched)) == [("a", 1), ("b", 1)]
    sched.add(make_seq("c", 1, priority=5, arrival_ns=2))
    assert split(step(sched)) == [("a", 1), ("b", 1)]
    assert ids(sched.waiting) == ["c"]


def test_max_num_seqs_is_respected() -> None:
    sched = make_scheduler(max_num_seqs=2, max_num_batched_tokens=100)
    a, b, c = (make_seq(rid, 4, arrival_ns=i) for i, rid in enumerate("abc"))
    for seq in (a, b, c):
        sched.add(seq)
    assert split(step(sched)) == [("a", 4), ("b", 4)]
    assert split(step(sched)) == [("a", 1), ("b", 1)]
    assert ids(sched.waiting) == ["c"]
    sched.remove(a)
    assert split(step(sched)) == [("b", 1), ("c", 4)]


# -- admission order -----------------------------------------------------------------------------------------------
def test_higher_priority_first_then_fcfs_within_a_class() -> None:
    sched = make_scheduler(num_blocks=2, block_size=4, max_num_seqs=2, max_num_batched_tokens=100)
    added = [make_seq("low1", 4, priority=0, arrival_ns=1), make_seq("high2", 4, priority=1, arrival_ns=3),
             make_seq("high1", 4, priority=1, arrival_ns=2), make_seq("low0", 4, priority=0, arrival_ns=0)]
    for seq in added:
        sched.add(seq)
    assert ids(sched.waiting) == ["high1", "high2", "low0", "low1"]
    assert split(step(sched)) == [("high1", 4), ("high2", 4)]
    assert (sched.blocks.block_ids("high1"), sched.blocks.block_ids("high2")) == ([0], [1])
    sched.remove(added[1])
    sched.remove(added[2])
    assert split(step(sched)) == [("low0", 4), ("low1", 4)]
    assert (sched.blocks.block_ids("low0"), sched.blocks.block_ids("low1")) == ([1], [0])  # tail-first reuse


def test_head_of_waiting_queue_is_not_overtaken() -> None:
    sched = make_scheduler(num_blocks=5, block_size=4, max_num_batched_tokens=100)
    a = make_seq("a", 8, priority=1, arrival_ns=0)
    sched.add(a)
    assert split(step(sched)) == [("a", 8)]
    sched.add(make_seq("b", 16, arrival_ns=1))  # needs 4 blocks
    sched.add(make_seq("c", 4, arrival_ns=2))  # would fit in the 2 left, but must wait behind b
    assert split(step(sched)) == [("a", 1)]
    assert sched.blocks.free_queue.ids() == [3, 4]
    assert ids(sched.waiting) == ["b", "c"]
    sched.remove(a)
    assert sched.blocks.free_queue.ids() == [3, 4, 2, 1, 0]
    assert split(step(sched)) == [("b", 16), ("c", 4)]
    assert sched.blocks.block_ids("b") == [3, 4, 2, 1]
    assert sched.blocks.block_ids("c") == [0]


def test_admission_uses_prefix_cache_hits() -> None:
    sched = make_scheduler(num_blocks=16, block_size=4, max_num_batched_tokens=100)
    prompt = list(range(100, 110))
    a = make_seq("a", prompt, arrival_ns=0)
    sched.add(a)
    assert split(step(sched)) == [("a", 10)]
    sched.remove(a)
    b = make_seq("b", prompt[:8] + [1, 2, 3], arrival_ns=1)
    sched.add(b)
    assert split(step(sched)) == [("b", 3)]
    assert (b.num_computed_tokens, b.num_cached_tokens) == (11, 8)
    assert sched.blocks.block_ids("b")[:2] == [0, 1]
    stats = sched.blocks.prefix_stats
    assert (stats.queried_tokens, stats.hit_tokens) == (10 + 11, 8)


# -- preemption ----------------------------------------------------------------------------------------------------
def test_preemption_picks_lowest_priority_latest_arrival() -> None:
    sched = make_scheduler(num_blocks=7, block_size=4, max_num_batched_tokens=64, enable_prefix_caching=False)
    a = make_seq("a", 4, priority=1, arrival_ns=0)
    b = make_seq("b", 4, priority=0, arrival_ns=1)
    c = make_seq("c", 8, priority=0, arrival_ns=2)
    for seq in (a, b, c):
        sched.add(seq)
    assert split(step(sched)) == [("a", 4), ("b", 4), ("c", 8)]
    assert [sched.blocks.block_ids(r) for r in "abc"] == [[0], [1], [2, 3]]
    assert split(step(sched)) == [("a", 1), ("b", 1), ("c", 1)]
    assert [sched.blocks.block_ids(r) for r in "abc"] == [[0, 4], [1, 5], [2, 3, 6]]
    assert sched.blocks.free_queue.ids() == []
    for _ in range(3):  # steps 3-5 fit in the blocks held
        assert split(step(sched)) == [("a", 1), ("b", 1), ("c", 1)]

    # Step 6: a needs a third block; c (priority 0, latest) is the victim and its blocks go back tail-first.
    e = make_seq("e", 4, priority=5, arrival_ns=10)
    sched.add(e)
    batch = step(sched)
    assert ids(batch.preempted) == ["c"]
    assert split(batch) == [("a", 1), ("b", 1)]  # e would fit in block 2, but nobody is admitted this step
    assert sched.blocks.block_ids("a") == [0, 4, 6]
    assert sched.blocks.block_ids("b") == [1, 5, 3]
    assert sched.blocks.block_ids("c") == []
    assert sched.blocks.free_queue.ids() == [2]
    assert (c.status, c.num_computed_tokens, c.num_preemptions, c.num_tokens) == (SequenceStatus.WAITING, 0, 1, 13)
    assert ids(sched.running) == ["a", "b"]
    assert ids(sched.waiting) == ["e", "c"]

    # Step 7: e is admitted; c (13 tokens, 4 blocks) does not fit.
    assert split(step(sched)) == [("a", 1), ("b", 1), ("e", 4)]
    assert sched.blocks.block_ids("e") == [2]

    # Step 8: e needs a second block; b is now the lowest-ranked running sequence.
    batch = step(sched)
    assert ids(batch.preempted) == ["b"]
    assert split(batch) == [("e", 1), ("a", 1)]
    assert sched.blocks.block_ids("e") == [2, 3]
    assert sched.blocks.free_queue.ids() == [5, 1]
    assert ids(sched.waiting) == ["b", "c"]

    # Steps 9-13: b (11 tokens) waits at the head; a takes block 5 at step 10, e takes block 1 at step 12.
    for _ in range(5):
        batch = step(sched)
        assert (split(batch), batch.preempted) == ([("e", 1), ("a", 1)], [])
    assert sched.blocks.block_ids("a") == [0, 4, 6, 5]
    assert sched.blocks.block_ids("e") == [2, 3, 1]

    # Step 14: a needs a fifth block and is itself the lowest-ranked runner.
    batch = step(sched)
    assert ids(batch.preempted) == ["a"]
    assert split(batch) == [("e", 1)]
    assert sched.blocks.free_queue.ids() == [5, 6, 4, 0]
    assert ids(sched.waiting) == ["a", "b", "c"]
    assert (a.num_computed_tokens, a.num_preemptions, b.num_preemptions) == (0, 1, 1)
    assert sched.num_preemptions == 3


def test_preemption_never_picks_a_sequence_already_scheduled_this_step() -> None:
    # Equal rank (same priority and arrival): the victim must still be one not yet in the batch.
    sched = make_scheduler(num_blocks=2, block_size=4, max_num_batched_tokens=64, enable_prefix_caching=False)
    x, y = make_seq("x", 3, arrival_ns=0), make_seq("y", 4, arrival_ns=0)
    sched.add(x)
    sched.add(y)
    assert split(step(sched)) == [("x", 3), ("y", 4)]
    batch = step(sched)  # x fits its 4th token in block 0; y needs a second block
    assert ids(batch.preempted) == ["y"]
    assert split(batch) == [("x", 1)]
    assert all(seq.status is SequenceStatus.RUNNING for seq in batch.seqs)
    assert sched.blocks.block_ids("x") == [0]
    assert x.num_computed_tokens == 4


def test_remove_frees_blocks_of_running_and_drops_waiting() -> None:
    sched = make_scheduler(num_blocks=4, block_size=4, max_num_seqs=1, max_num_batched_tokens=64)
    a, b = make_seq("a", 8, arrival_ns=0), make_seq("b", 4, arrival_ns=1)
    sched.add(a)
    sched.add(b)
    assert split(step(sched)) == [("a", 8)]
    assert sched.blocks.free_queue.ids() == [2, 3]
    sched.remove(b)
    assert (b.status, sched.num_waiting, sched.blocks.free_queue.ids()) == (SequenceStatus.FINISHED, 0, [2, 3])
    sched.remove(a)
    assert (a.status, sched.running) == (SequenceStatus.FINISHED, [])
    assert sched.blocks.free_queue.ids() == [2, 3, 1, 0]
    assert sched.blocks.tables == {}
    assert not sched.has_work()
    assert not step(sched)
