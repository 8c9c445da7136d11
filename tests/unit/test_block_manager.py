"""BlockManager on CPU: exact block ids, free-queue (LRU) order, reference counts and prefix reuse."""

from __future__ import annotations

import pytest

import engine.block_manager as block_manager_module
from engine.block_manager import Block, BlockManager, FreeBlockQueue
from tests.unit.engine_factories import make_block_manager

PROMPT = list(range(100, 110))  # block_size 4: two full blocks (100-103, 104-107) and a partial one (108-109)


def _cached_request(bm: BlockManager, request_id: str = "a", prompt: list[int] = PROMPT,
                    extra: bytes = b"") -> list[Block]:
    """Allocates `prompt`, marks all of it computed and publishes its full blocks."""
    bm.allocate(request_id, len(prompt))
    bm.register_full_blocks(request_id, prompt, len(prompt), extra)
    return list(bm.tables[request_id])


# -- allocation and the free queue ---------------------------------------------------------------------------------
def test_fresh_pool_allocates_block_ids_in_order() -> None:
    bm = make_block_manager(num_blocks=8)
    assert bm.free_queue.ids() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert bm.allocate("a", 9) == [0, 1, 2]
    assert bm.allocate("b", 4) == [3]
    assert bm.allocate("a", 12) == []  # three blocks already hold 12 slots
    assert bm.allocate("a", 13) == [4]
    assert bm.block_ids("a") == [0, 1, 2, 4]
    assert bm.block_ids("b") == [3]
    assert bm.free_queue.ids() == [5, 6, 7]
    assert (bm.num_free_blocks, bm.num_used_blocks) == (3, 5)
    assert [b.ref_count for b in bm.blocks] == [1, 1, 1, 1, 1, 0, 0, 0]


def test_allocate_returns_none_and_changes_nothing_when_short() -> None:
    bm = make_block_manager(num_blocks=4)
    assert bm.allocate("a", 8) == [0, 1]
    assert bm.allocate("b", 12) is None  # needs 3, 2 free
    assert bm.allocate("a", 20) is None  # growing an existing table: needs 3 more
    assert bm.num_free_blocks == 2
    assert bm.free_queue.ids() == [2, 3]
    assert bm.block_ids("a") == [0, 1]
    assert "b" not in bm.tables and "b" not in bm.hashes
    assert [b.ref_count for b in bm.blocks] == [1, 1, 0, 0]
    assert bm.allocate("b", 8) == [2, 3]  # exactly what is left still fits
    assert bm.allocate("c", 1) is None


def test_free_returns_blocks_tail_first_and_lru_evicts_least_recently_freed() -> None:
    bm = make_block_manager(num_blocks=6)
    assert bm.allocate("a", 12) == [0, 1, 2]
    assert bm.allocate("b", 8) == [3, 4]
    assert bm.free_queue.ids() == [5]
    bm.free("a")
    assert bm.free_queue.ids() == [5, 2, 1, 0]
    bm.free("b")
    assert bm.free_queue.ids() == [5, 2, 1, 0, 4, 3]
    # Least recently freed first; within one request's free, its tail block goes before its head.
    assert bm.allocate("c", 12) == [5, 2, 1]
    assert bm.allocate("d", 4) == [0]
    assert bm.free_queue.ids() == [4, 3]


def test_free_of_unknown_or_already_freed_request_is_a_no_op() -> None:
    bm = make_block_manager(num_blocks=4)
    bm.allocate("a", 8)
    bm.free("a")
    bm.free("a")
    bm.free("never-seen")
    assert bm.free_queue.ids() == [2, 3, 1, 0]
    assert [b.ref_count for b in bm.blocks] == [0, 0, 0, 0]


def test_free_block_queue_remove_from_middle_head_and_tail() -> None:
    blocks = [Block(i) for i in range(5)]
    queue = FreeBlockQueue(blocks)
    queue.remove(blocks[2])
    assert queue.ids() == [0, 1, 3, 4]
    assert queue.size == 4
    assert blocks[2].prev is None and blocks[2].next is None
    queue.remove(blocks[0])
    queue.remove(blocks[4])
    assert queue.ids() == [1, 3]
    queue.append(blocks[2])
    assert queue.ids() == [1, 3, 2]
    assert queue.popleft() is blocks[1]
    assert queue.ids() == [3, 2]
    assert queue.size == 2
    with pytest.raises(ValueError, match="not in the free queue"):
        queue.remove(blocks[0])
    queue.popleft()
    queue.popleft()
    assert queue.ids() == [] and queue.size == 0
    with pytest.raises(ValueError, match="no free blocks"):
        queue.popleft()


# -- prefix reuse --------------------------------------------------------------------------------------------------
def test_register_publishes_only_computed_full_blocks() -> None:
    bm = make_block_manager(num_blocks=8)
    bm.allocate("a", len(PROMPT))
    bm.register_full_blocks("a", PROMPT, 6)  # block 0 is complete, block 1 half computed
    assert bm.num_cached_blocks == 1
    assert bm.blocks[0].token_ids == (100, 101, 102, 103)
    assert bm.blocks[1].block_hash is None
    bm.register_full_blocks("a", PROMPT, 10)
    assert bm.num_cached_blocks == 2
    assert bm.blocks[1].token_ids == (104, 105, 106, 107)
    assert bm.blocks[2].block_hash is None  # partial block is never published
    assert bm.hashes["a"] == [bm.blocks[0].block_hash, bm.blocks[1].block_hash]


def test_find_cached_prefix_returns_the_exact_blocks() -> None:
    bm = make_block_manager(num_blocks=8)
    b0, b1, _ = _cached_request(bm)
    hits = bm.find_cached_prefix(PROMPT[:8] + [1, 2, 3])
    assert len(hits) == 2 and hits[0] is b0 and hits[1] is b1
    assert bm.find_cached_prefix(PROMPT) == [b0, b1]


def test_find_cached_prefix_never_covers_the_last_token() -> None:
    bm = make_block_manager(num_blocks=8)
    b0, _, _ = _cached_request(bm)
    assert bm.find_cached_prefix(PROMPT[:8]) == [b0]  # exactly two full blocks → one hit
    assert bm.find_cached_prefix(PROMPT[:9]) == [b0, bm.blocks[1]]
    assert bm.find_cached_prefix(PROMPT[:4]) == []  # exactly one full block → none
    assert bm.find_cached_prefix(PROMPT[:3]) == []


def test_find_cached_prefix_stops_at_the_first_mismatching_block() -> None:
    bm = make_block_manager(num_blocks=8)
    prompt = list(range(100, 113))  # three full blocks + 1
    table = _cached_request(bm, prompt=prompt)
    assert bm.num_cached_blocks == 3
    changed_middle = prompt[:4] + [0, 0, 0, 0] + prompt[8:]
    assert bm.find_cached_prefix(changed_middle) == [table[0]]
    assert bm.find_cached_prefix([0] + prompt[1:]) == []


def test_different_extra_salt_gives_no_hit() -> None:
    bm = make_block_manager(num_blocks=8)
    b0, b1, _ = _cached_request(bm, extra=b"model=x|tenant=a")
    assert bm.find_cached_prefix(PROMPT, b"model=x|tenant=a") == [b0, b1]
    assert bm.find_cached_prefix(PROMPT, b"model=x|tenant=b") == []
    assert bm.find_cached_prefix(PROMPT) == []


def test_forged_hash_collision_is_rejected_by_token_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(block_manager_module, "hash_block", lambda *args, **kwargs: b"\x00" * 16)
    bm = make_block_manager(num_blocks=8)
    b0, _, _ = _cached_request(bm)
    assert bm.cached == {b"\x00" * 16: b0}  # block 1 collided with block 0 and was not published
    assert bm.find_cached_prefix([1, 2, 3, 4, 5, 6, 7, 8, 9]) == []
    # The first block really matches; the second "hits" block 0 by hash but its tokens differ.
    assert bm.find_cached_prefix(PROMPT) == [b0]


def test_shared_blocks_are_ref_counted_and_survive_one_free() -> None:
    bm = make_block_manager(num_blocks=8)
    b0, b1, _ = _cached_request(bm)
    prefix = bm.find_cached_prefix(PROMPT + [1])
    assert prefix == [b0, b1]
    assert bm.allocate("b", 11, prefix) == [3]
    assert bm.block_ids("b") == [0, 1, 3]
    assert (b0.ref_count, b1.ref_count) == (2, 2)
    assert bm.hashes["b"] == [b0.block_hash, b1.block_hash]
    bm.free("a")
    assert (b0.ref_count, b1.ref_count) == (1, 1)
    assert bm.free_queue.ids() == [4, 5, 6, 7, 2]
    assert bm.num_cached_blocks == 2
    bm.free("b")
    assert bm.free_queue.ids() == [4, 5, 6, 7, 2, 3, 1, 0]
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert bm.num_cached_blocks == 2  # still reusable until allocated over


def test_adopting_a_free_cached_block_takes_it_out_of_the_free_queue() -> None:
    bm = make_block_manager(num_blocks=8)
    b0, b1, _ = _cached_request(bm)
    bm.free("a")
    assert bm.free_queue.ids() == [3, 4, 5, 6, 7, 2, 1, 0]
    prefix = bm.find_cached_prefix(PROMPT + [1])
    assert prefix == [b0, b1]
    assert bm.allocate("b", 11, prefix) == [3]
    assert bm.block_ids("b") == [0, 1, 3]
    assert bm.free_queue.ids() == [4, 5, 6, 7, 2]
    assert (b0.ref_count, b1.ref_count) == (1, 1)
    assert bm.num_cached_blocks == 2


def test_adopted_free_blocks_do_not_count_as_free_space() -> None:
    bm = make_block_manager(num_blocks=4)
    _cached_request(bm)
    bm.free("a")
    assert bm.free_queue.ids() == [3, 2, 1, 0]
    prompt = PROMPT[:8] + list(range(12))  # 20 tokens: 2 cached blocks + 3 new > 4 - 2 revived
    prefix = bm.find_cached_prefix(prompt)
    assert [b.block_id for b in prefix] == [0, 1]
    assert bm.allocate("b", 20, prefix) is None
    assert bm.free_queue.ids() == [3, 2, 1, 0]
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert "b" not in bm.tables
    assert bm.allocate("b", 16, prefix) == [3, 2]
    assert bm.block_ids("b") == [0, 1, 3, 2]
    assert bm.free_queue.ids() == []


def test_allocating_over_a_cached_block_evicts_it() -> None:
    bm = make_block_manager(num_blocks=4)
    b0, b1, _ = _cached_request(bm)
    bm.free("a")
    hash0 = b0.block_hash
    assert bm.allocate("c", 12) == [3, 2, 1]  # tail of "a" first: block 1 is evicted before block 0
    assert bm.cached == {hash0: b0}
    assert b1.block_hash is None and b1.token_ids == ()
    assert bm.find_cached_prefix(PROMPT) == [b0]
    assert bm.allocate("d", 4) == [0]
    assert bm.cached == {}
    assert b0.block_hash is None
    assert bm.find_cached_prefix(PROMPT) == []


def test_ref_counts_return_to_zero_after_freeing_everything() -> None:
    bm = make_block_manager(num_blocks=12)
    _cached_request(bm, "a")
    for rid in ("b", "c"):
        prefix = bm.find_cached_prefix(PROMPT + [ord(rid)])
        bm.allocate(rid, 11, prefix)
    assert [bm.blocks[i].ref_count for i in (0, 1, 2, 3, 4)] == [3, 3, 1, 1, 1]
    for rid in ("b", "a", "c"):
        bm.free(rid)
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert bm.num_free_blocks == 12 and bm.num_used_blocks == 0
    assert bm.tables == {} and bm.hashes == {}


def test_prefix_caching_disabled() -> None:
    bm = make_block_manager(num_blocks=8, enable_prefix_caching=False)
    bm.allocate("a", len(PROMPT))
    bm.register_full_blocks("a", PROMPT, len(PROMPT))
    assert bm.num_cached_blocks == 0
    assert bm.find_cached_prefix(PROMPT) == []


def test_reset_prefix_cache_forgets_all_hashes() -> None:
    bm = make_block_manager(num_blocks=8)
    b0, b1, _ = _cached_request(bm)
    bm.reset_prefix_cache()
    assert bm.cached == {}
    assert b0.block_hash is None and b1.token_ids == ()
    assert bm.find_cached_prefix(PROMPT) == []


# -- misuse --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("num_blocks", "block_size"), [(0, 4), (4, 0), (-1, 4)])
def test_invalid_pool_raises(num_blocks: int, block_size: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        BlockManager(num_blocks, block_size)


def test_freeing_a_block_more_often_than_allocated_raises() -> None:
    bm = make_block_manager(num_blocks=4)
    bm.allocate("a", 4)
    prefix = list(bm.tables["a"])
    bm.allocate("b", 5, prefix)
    prefix[0].ref_count = 1  # a reference lost: "a" and "b" both think they hold block 0
    bm.free("a")
    with pytest.raises(ValueError, match="block 0 freed more often than allocated"):
        bm.free("b")


def test_adopting_a_block_that_is_not_in_the_free_queue_raises() -> None:
    bm = make_block_manager(num_blocks=4)
    foreign = Block(99)
    with pytest.raises(ValueError, match="block 99 is not in the free queue"):
        bm.allocate("a", 8, [foreign])
    assert bm.free_queue.ids() == [0, 1, 2, 3]


def test_record_prefix_query_accumulates() -> None:
    bm = make_block_manager()
    assert (bm.prefix_stats.queried_tokens, bm.prefix_stats.hit_tokens) == (0, 0)
    bm.record_prefix_query(10, 8)
    bm.record_prefix_query(6, 0)
    assert (bm.prefix_stats.queried_tokens, bm.prefix_stats.hit_tokens) == (16, 8)
