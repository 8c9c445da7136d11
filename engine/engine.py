"""The engine: in-flight batching over a paged KV cache, driven step by step.

`Engine.step()` admits new requests, drops cancelled ones, asks the scheduler for this step's batch, runs one forward
pass, samples, and hands each sequence's new token to its output sink. `start()` runs steps on a background thread
(how the Triton model uses it); tests and benchmarks can also call `step()` directly.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.block_manager import DEFAULT_BLOCK_SIZE, BlockManager
from engine.guided import GuidedDecoding, GuideError, MaskFill
from engine.logprobs import TokenLogprob, raw_log_softmax, token_logprobs
from engine.model import Llama
from engine.request import FinishReason, GenerationRequest, OutputSink, StepOutput
from engine.runner import KVPool, ModelRunner, kv_bytes_per_block
from engine.sampling import hits_stop_sequence, sample_batch, sample_next
from engine.scheduler import ScheduledBatch, Scheduler, SchedulerConfig
from engine.sequence import Sequence

STOP_REQUEST_TTL_S = 60.0  # a stop for a request that never arrives is forgotten after this

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block_size: int = DEFAULT_BLOCK_SIZE
    kv_cache_bytes: int = 256 * 1024 * 1024  # the pool's memory budget (cf. max_tokens_in_paged_kv_cache)
    num_blocks: int | None = None  # overrides kv_cache_bytes when set
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_seq_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    cache_salt: str = ""  # mixed into block hashes (model identity; tenants add their own)
    native_kernels: bool = True  # use engine/kernels where built and applicable (else the PyTorch fallback)
    # The projections' (matrix products') and KV cache's dtype when it differs from the model's: "bfloat16" runs the
    # products on AMX / AVX-512-BF16 and stores K/V in bfloat16, with float32 activations, norms and attention
    # arithmetic (the paged kernel widens bfloat16 K/V as it reads them). None: the model's dtype throughout.
    matmul_dtype: str | None = None
    # Intra-op threads: a step computing at least parallel_min_tokens tokens uses max_threads, a smaller one a
    # single thread (its parallel regions would be too short to pay for waking a second thread, and on a small
    # machine that thread's core is often busy with the server around the engine). None: leave torch's setting.
    max_threads: int | None = None
    parallel_min_tokens: int = 32


@dataclass(slots=True)
class EngineStats:
    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_cached: int
    prefix_queried_tokens: int
    prefix_hit_tokens: int
    preemptions: int
    cancellations: int
    steps: int
    last_batch_size: int
    last_batch_tokens: int
    kv_slots_allocated: int  # summed over steps: slots in allocated blocks
    kv_slots_filled: int  # summed over steps: slots holding a token

    @property
    def kv_utilisation(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0

    @property
    def kv_waste(self) -> float:
        return 1.0 - self.kv_slots_filled / self.kv_slots_allocated if self.kv_slots_allocated else 0.0


class Engine:
    def __init__(self, model: Llama, config: EngineConfig = EngineConfig(),
                 guided: GuidedDecoding | None = None) -> None:
        self.model = model.eval()
        self.config = config
        self.guided = guided  # None: requests with a guide are refused
        device = model.model.embed_tokens.weight.device
        # bfloat16 mode keeps the KV cache in bfloat16 too: half the bytes to read per decode step, twice the blocks
        matmul_dtype = getattr(torch, config.matmul_dtype) if config.matmul_dtype else None
        dtype = matmul_dtype or model.model.embed_tokens.weight.dtype
        self.max_seq_len = min(config.max_seq_len or model.args.max_position_embeddings,
                               model.args.max_position_embeddings)
        num_blocks = config.num_blocks or max(1, config.kv_cache_bytes // kv_bytes_per_block(
            model, config.block_size, dtype))
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens), self.blocks)
        self.runner = ModelRunner(model, KVPool.allocate(model, num_blocks, config.block_size, dtype, device),
                                  native_kernels=config.native_kernels,
                                  matmul_dtype=matmul_dtype)
        self._salt = config.cache_salt.encode()
        self._inbox: queue.SimpleQueue[Sequence | None] = queue.SimpleQueue()
        self._live: dict[str, Sequence] = {}
        self._stop_requests: dict[str, float] = {}  # request id → when a stop was asked (may precede admission)
        self._stop_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._steps = self._cancellations = 0
        self._last_batch = ScheduledBatch()
        self._slots_allocated = self._slots_filled = 0
        self._threads = 0  # the intra-op threads last set (0: not yet)
        self.step_listener: Callable[[ScheduledBatch], None] | None = None  # e.g. metrics, called after each step

    # -- intake ----------------------------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: OutputSink) -> None:
        """Thread-safe. Raises ValueError for requests that can never run (the caller reports it)."""
        if len(request.prompt_ids) >= self.max_seq_len:
            raise ValueError(f"prompt has {len(request.prompt_ids)} tokens; the context window is {self.max_seq_len}")
        if self.blocks.blocks_needed(len(request.prompt_ids) + 1) > self.blocks.num_blocks:
            raise ValueError("prompt does not fit in the KV cache")
        salt = self._salt
        if request.cache_salt_id is not None:
            salt += b"|" + str(request.cache_salt_id).encode()
        seq = Sequence(request, sink, cache_salt=salt)
        if request.guide is not None:  # compiled here, on the caller's thread, never on the engine's
            if self.guided is None:
                raise GuideError("guided decoding is not available: the engine has no tokenizer")
            seq.matcher = self.guided.matcher(request.guide)
        self._inbox.put(seq)

    def _drain_inbox(self) -> None:
        while True:
            try:
                seq = self._inbox.get_nowait()
            except queue.Empty:
                return
            if seq is not None:
                self._admit(seq)

    def _admit(self, seq: Sequence) -> None:
        self._live[seq.request_id] = seq
        self.scheduler.add(seq)

    def cancel(self, request_id: str) -> None:
        """Thread-safe: ends the request at the next step (a request still queued is dropped when it arrives)."""
        now = time.monotonic()
        with self._stop_lock:
            self._stop_requests[request_id] = now
            for stale in [rid for rid, at in self._stop_requests.items() if now - at > STOP_REQUEST_TTL_S]:
                del self._stop_requests[stale]
        self.wake()

    def _stop_asked(self, request_id: str) -> bool:
        with self._stop_lock:
            return self._stop_requests.pop(request_id, None) is not None

    def _drop_cancelled(self) -> None:
        for seq in list(self._live.values()):
            if (seq.sink is not None and seq.sink.is_cancelled()) or (self._stop_requests and
                                                                      self._stop_asked(seq.request_id)):
                self._cancellations += 1
                self._finish(seq, FinishReason.CANCELLED, [])

    # -- the step --------------------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return self.scheduler.has_work() or not self._inbox.empty()

    def step(self) -> int:
        """Runs one iteration; returns the number of tokens computed (0: nothing to do)."""
        self._drain_inbox()
        self._drop_cancelled()
        batch = self.scheduler.schedule()
        self._last_batch = batch
        if not batch:
            if self.step_listener is not None:
                self.step_listener(batch)  # cancellations may have changed the state
            return 0
        self._set_threads(batch.total_tokens)
        tables = [self.blocks.block_ids(seq.request_id) for seq in batch.seqs]
        # the sequences that sample a token this step (their logits rows, in order)
        sampling = [seq for seq, n in zip(batch.seqs, batch.num_tokens, strict=True)
                    if seq.num_computed_tokens + n == seq.num_tokens]
        guided_rows = [i for i, seq in enumerate(sampling) if seq.matcher is not None]
        # the grammar masks are computed by llguidance's threads while the forward pass runs
        masks = self.guided.start_fill([sampling[i].matcher for i in guided_rows]) if guided_rows else None
        try:
            logits = self.runner.execute(batch, tables)
        except Exception as exc:  # the whole step failed: its sequences get the error, the engine goes on
            log.exception("engine step failed")
            if masks is not None:
                masks.pending.result()
            for seq in batch.seqs:
                self._fail(seq, exc)
            return 0
        self.scheduler.after_step(batch)
        logprob_rows = [i for i, seq in enumerate(sampling) if seq.request.logprobs is not None]
        raw = raw_log_softmax(logits, logprob_rows) if logprob_rows else None  # before any mask or penalty
        if masks is not None:
            try:
                logits = self._masked(logits, masks, guided_rows)
            except Exception as exc:  # the grammar library failed: its requests get the error, the others go on
                log.exception("guided decoding mask failed")
                for i in guided_rows:
                    self._fail(sampling[i], exc)
                kept = sorted(set(range(len(sampling))) - set(guided_rows))
                sampling, logits = [sampling[i] for i in kept], logits[kept]
                logprob_rows = [i for i, seq in enumerate(sampling) if seq.request.logprobs is not None]
                raw = raw_log_softmax(logits, logprob_rows) if logprob_rows else None
        tokens = self._sample(sampling, logits)
        logprobs: dict[int, TokenLogprob] = {}
        if raw is not None:
            picked = [i for i in logprob_rows if tokens[i] is not None]
            keep = [logprob_rows.index(i) for i in picked]
            if picked:
                found = token_logprobs(raw[keep], [int(tokens[i]) for i in picked],
                                       [int(sampling[i].request.logprobs or 0) for i in picked])
                logprobs = dict(zip(picked, found, strict=True))
        for i, (seq, token) in enumerate(zip(sampling, tokens, strict=True)):
            if token is not None:
                self._advance(seq, token, logprobs.get(i))
        self._steps += 1
        # KV waste as each sequence sees it: slots in its block table not (yet) holding one of its tokens.
        bs = self.blocks.block_size
        for running in self.scheduler.running:
            self._slots_allocated += len(self.blocks.tables.get(running.request_id, ())) * bs
            self._slots_filled += running.num_computed_tokens
        if self.step_listener is not None:
            self.step_listener(batch)
        return batch.total_tokens

    def _set_threads(self, tokens: int) -> None:
        limit = self.config.max_threads
        if limit is None:
            return
        wanted = limit if tokens >= self.config.parallel_min_tokens else 1
        if wanted != self._threads:
            torch.set_num_threads(wanted)
            self._threads = wanted

    def _masked(self, logits: torch.Tensor, masks: MaskFill, rows: list[int]) -> torch.Tensor:
        return masks.apply(logits.float().cpu(), rows)

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int | None]:
        if not seqs:
            return []
        try:
            return list(sample_batch(logits, [s.request.params for s in seqs], [s.prompt_ids for s in seqs],
                                     [s.output_ids for s in seqs], [s.generator for s in seqs]))
        except Exception:  # find the request(s) whose parameters fail; the others go on
            out: list[int | None] = [None] * len(seqs)
            for i, seq in enumerate(seqs):
                try:
                    out[i] = sample_next(logits[i], seq.request.params, seq.prompt_ids, seq.output_ids,
                                         seq.generator)
                except Exception as exc:  # one request's bad parameters fail that request only
                    self._fail(seq, exc)
            return out

    def _advance(self, seq: Sequence, token: int, logprob: TokenLogprob | None = None) -> None:
        params = seq.request.params
        if params.end_id is not None and token == params.end_id:
            self._finish(seq, FinishReason.STOP, [])
            return
        grammar_done = False
        if seq.matcher is not None:
            accepting = seq.matcher.is_accepting()
            if not seq.matcher.consume_token(token):
                # only when nothing the grammar allows was left (e.g. min_tokens held back the end it required)
                if accepting:
                    self._finish(seq, FinishReason.STOP, [])
                else:
                    self._fail(seq, GuideError(f"guided decoding: the grammar allows no token here "
                                               f"({seq.matcher.get_error() or 'dead end'})"))
                return
            grammar_done = seq.matcher.is_stopped()  # accepting, and nothing but the end may follow
        seq.append_token(token)
        if hits_stop_sequence(params, seq.output_ids) or grammar_done:
            self._finish(seq, FinishReason.STOP, [token], logprob)
        elif len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.max_seq_len:
            self._finish(seq, FinishReason.LENGTH, [token], logprob)
        elif seq.sink is not None:
            output = StepOutput(seq.request_id, [token], cached_tokens=seq.num_cached_tokens)
            _attach(output, logprob)
            seq.sink.emit(output)

    def _finish(self, seq: Sequence, reason: FinishReason, last: list[int],
                logprob: TokenLogprob | None = None) -> None:
        self.scheduler.remove(seq)
        self._live.pop(seq.request_id, None)
        seq.finish_reason = reason
        if seq.sink is not None:
            output = StepOutput(seq.request_id, last, finished=True, finish_reason=reason,
                                cached_tokens=seq.num_cached_tokens)
            if last:
                _attach(output, logprob)
            seq.sink.emit(output)

    def _fail(self, seq: Sequence, error: Exception) -> None:
        self.scheduler.remove(seq)
        self._live.pop(seq.request_id, None)
        if seq.sink is not None:
            seq.sink.fail(error)

    # -- background loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sluice-engine", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._inbox.put(None)

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stopping.is_set():
            if not self.scheduler.has_work():
                try:
                    item = self._inbox.get(timeout=0.05)
                except queue.Empty:
                    self._drop_cancelled()
                    if self.step_listener is not None:
                        self.step_listener(ScheduledBatch())  # idle: lets throttled metrics catch up
                    continue
                if item is not None:
                    self._admit(item)
            self.step()
        for seq in list(self._live.values()):
            self._finish(seq, FinishReason.CANCELLED, [])

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_until_done(self, max_steps: int = 1_000_000) -> None:
        """Steps until every submitted request has finished (synchronous use: tests, benchmarks)."""
        for _ in range(max_steps):
            if not self.has_work():
                return
            self.step()
        raise RuntimeError("requests did not finish within max_steps")

    def stats(self) -> EngineStats:
        prefix = self.blocks.prefix_stats
        return EngineStats(
            running=len(self.scheduler.running), waiting=self.scheduler.num_waiting,
            kv_blocks_total=self.blocks.num_blocks, kv_blocks_used=self.blocks.num_used_blocks,
            kv_blocks_cached=self.blocks.num_cached_blocks, prefix_queried_tokens=prefix.queried_tokens,
            prefix_hit_tokens=prefix.hit_tokens, preemptions=self.scheduler.num_preemptions,
            cancellations=self._cancellations, steps=self._steps, last_batch_size=len(self._last_batch.seqs),
            last_batch_tokens=self._last_batch.total_tokens, kv_slots_allocated=self._slots_allocated,
            kv_slots_filled=self._slots_filled)


def _attach(output: StepOutput, logprob: TokenLogprob | None) -> None:
    """Puts one token's log-probs on its output (a request that asked for them gets them on every token)."""
    if logprob is not None:
        output.logprobs = [logprob.logprob]
        output.top_logprobs = [logprob.top]
