"""Iteration-level scheduling: every step decides which sequences compute how many tokens.

Running sequences go first (their decodes are one token each; an unfinished chunked prefill continues), then waiting
sequences are admitted by priority class and arrival order while the step's token budget, the sequence limit and the
KV blocks allow. A prompt longer than the remaining budget is prefilled in chunks across steps, so it never stalls
the running decodes. When blocks run out, the lowest-priority, latest-arrived running sequence is preempted: its
blocks are freed and it is recomputed later (its finished blocks usually come back as prefix-cache hits).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from engine.block_manager import BlockManager
from engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512  # the per-step token budget; also the prefill chunk size

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)  # tokens each sequence computes this step
    preempted: list[Sequence] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.seqs)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


def _rank(seq: Sequence) -> tuple[int, int]:
    """Sort key: higher priority first, then earlier arrival (FCFS within a class)."""
    return (-seq.priority, seq.request.arrival_ns)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.blocks = block_manager
        self._waiting: list[tuple[tuple[int, int], int, Sequence]] = []
        self._counter = itertools.count()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # -- queue management ------------------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        heapq.heappush(self._waiting, (_rank(seq), next(self._counter), seq))

    @property
    def waiting(self) -> list[Sequence]:
        return [entry[2] for entry in sorted(self._waiting)]

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_work(self) -> bool:
        return bool(self.running or self._waiting)

    def remove(self, seq: Sequence) -> None:
        """Takes a sequence out of the engine (finished, cancelled or failed) and frees its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        else:
            before = len(self._waiting)
            self._waiting = [entry for entry in self._waiting if entry[2] is not seq]
            if len(self._waiting) != before:
                heapq.heapify(self._waiting)
        self.blocks.free(seq.request_id)
        seq.status = SequenceStatus.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.request_id)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.add(seq)

    # -- the step --------------------------------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        # Decodes first (one token each, by rank), then unfinished chunked prefills (by rank): a long prompt takes
        # only the budget the decodes leave, so it never stalls them.
        self.running.sort(key=lambda seq: (seq.num_pending_tokens > 1, _rank(seq)))
        scheduled: set[int] = set()
        for seq in list(self.running):
            if budget == 0:
                break
            if seq not in self.running:  # preempted earlier in this loop to make room
                continue
            n = min(seq.num_pending_tokens, budget)
            while self.blocks.allocate(seq.request_id, seq.num_computed_tokens + n) is None:
                # the lowest-ranked sequence not already scheduled this step (possibly `seq` itself)
                victim = max((s for s in self.running if id(s) not in scheduled), key=_rank)
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                scheduled.add(id(seq))
                batch.seqs.append(seq)
                batch.num_tokens.append(n)
                budget -= n
        if batch.preempted:
            return batch  # memory is tight: admit nobody new this step
        while self._waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self._waiting[0][2]
            tokens = seq.all_token_ids
            prefix = self.blocks.find_cached_prefix(tokens, seq.cache_salt)
            computed = len(prefix) * self.blocks.block_size
            n = min(len(tokens) - computed, budget)
            if self.blocks.allocate(seq.request_id, computed + n, prefix) is None:
                break  # the head of the queue waits for blocks; nobody overtakes it
            heapq.heappop(self._waiting)
            self.blocks.record_prefix_query(len(tokens), computed)
            if not seq.admitted:
                seq.num_cached_tokens = computed
                seq.admitted = True
            seq.num_computed_tokens = computed
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_tokens.append(n)
            budget -= n
        return batch

    def after_step(self, batch: ScheduledBatch) -> None:
        """Records the computed tokens and publishes newly full blocks for prefix reuse."""
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            seq.num_computed_tokens += n
            self.blocks.register_full_blocks(seq.request_id, seq.all_token_ids, seq.num_computed_tokens,
                                             seq.cache_salt)
