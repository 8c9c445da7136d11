"""Triton Python-backend model for the `tensorrt_llm` slot, served by Sluice's CPU engine.

Decoupled: `execute` parses each request into a GenerationRequest and hands it to the engine thread, which streams
responses through the request's response sender and ends each request with TRITONSERVER_RESPONSE_COMPLETE_FINAL.
A bad request gets its own error response; the others go on.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

from engine.block_manager import DEFAULT_BLOCK_SIZE
from engine.engine import Engine, EngineConfig
from engine.guided import Guide, GuidedDecoding
from engine.model import load_checkpoint
from engine.request import FinishReason, GenerationRequest, StepOutput
from engine.sampling import SamplingParams
from engine.scheduler import ScheduledBatch
from engine.streaming import STREAM_WORDS_PARAMETER, StreamInterval, word_breaks
from engine.stub_lifetime import watch_server

log = logging.getLogger("sluice.tensorrt_llm")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# Log-prob outputs go only to requests that set return_log_probs; the top-k ones only with num_top_log_probs > 0.
LOGPROB_OUTPUTS = frozenset({"cum_log_probs", "output_log_probs", "output_top_log_probs", "output_top_log_prob_ids"})
OPTIONAL_OUTPUTS = frozenset({"kv_cache_reused_blocks", "arrival_time_ns", "first_token_time_ns"}) | LOGPROB_OUTPUTS
# A client's cancellation reaches the engine within this (plus one step); TensorRT-LLM's backend polls every 100 ms
# too (cancellation_check_period_ms). The orchestrator's `stop` request ends a stream at once, without polling.
CANCEL_CHECK_S = 0.1
GAUGE_REFRESH_S = 0.25  # engine gauges are pushed to Triton at most this often (each push is a call to the server)


def _optional(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _scalar(request, name: str, default, cast):
    values = _optional(request, name)
    return default if values is None or values.size == 0 else cast(values[0])


def _parameters(request) -> dict:
    """The request's parameters (not tensors: Triton's per-request key/value map), {} when it has none."""
    try:
        return json.loads(request.parameters() or "{}")
    except (AttributeError, ValueError):
        return {}


def _word_breaks(checkpoint_dir: str, vocab_size: int) -> np.ndarray | None:
    """Which token ids end a word (engine/streaming.py); None, so whole-word streaming is off, without a tokenizer."""
    path = Path(checkpoint_dir) / "tokenizer.json"
    if not path.exists():
        return None
    return word_breaks(Tokenizer.from_file(str(path)), vocab_size)


def _text(request, name: str) -> str | None:
    """A TYPE_STRING input's first element, decoded (None when absent)."""
    values = _optional(request, name)
    if values is None or values.size == 0:
        return None
    value = values[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _guide(request) -> Guide | None:
    guide_type = _text(request, "guided_decoding_guide_type")
    if not guide_type:
        return None
    return Guide(guide_type, _text(request, "guided_decoding_guide") or "")


def _word_lists(request, name: str) -> list[list[int]]:
    """TensorRT-LLM's [2, N] layout: row 0 the concatenated token ids, row 1 the end offsets (padded with -1)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    array = tensor.as_numpy().reshape(2, -1)
    ids, offsets = array[0].tolist(), [int(o) for o in array[1].tolist() if o >= 0]
    sequences, start = [], 0
    for end in offsets:
        if end > start:
            sequences.append([int(t) for t in ids[start:end]])
        start = end
    return sequences


class _Outbox:
    """Sends the engine's responses from a thread of their own, in the order they were produced.

    Building and sending a response costs the Python backend a fixed ~0.1-0.3 ms (tensors copied into shared memory,
    a message to the server). Done here instead of on the engine thread, it overlaps the next step's forward pass,
    which runs in torch with the GIL released, and no longer adds to the time per token."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sluice-responses", daemon=True)
        self._thread.start()

    def put(self, send: Callable[[], None]) -> None:
        self._queue.put(send)

    def _run(self) -> None:
        while (send := self._queue.get()) is not None:
            try:
                send()
            except Exception:  # a request whose stream is gone must not stop the others' responses
                log.exception("sending a response failed")

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class _ResponseSink:
    """Adapts one Triton request to the engine's OutputSink."""

    def __init__(self, model: TritonPythonModel, request, prompt_ids: list[int], streaming: bool,
                 exclude_input: bool, arrival_ns: int, logprobs: int | None = None, words: bool = False) -> None:
        self._model = model
        self._words = words and model.word_breaks is not None  # stream whole words (engine/streaming.py)
        self._word_ended = False  # a token waiting to be sent holds whitespace
        self._request = request
        self._sender = request.get_response_sender()
        self._prompt_ids = prompt_ids
        self._streaming = streaming
        self._exclude_input = exclude_input
        self._arrival_ns = arrival_ns
        self._logprobs = logprobs  # None: not asked for; k: with the k best alternatives per token
        self._first_token_ns = 0
        self._collected: list[int] = []
        self._collected_logprobs: list[float] = []
        self._collected_top: list[list[tuple[int, float]]] = []
        self._cum_logprob = 0.0  # over every token sent so far (TensorRT-LLM's cum_log_probs)
        self._cached_tokens = 0
        self._tokens_sent = 0
        self._wanted = frozenset(request.requested_output_names()) or OPTIONAL_OUTPUTS
        self._cancelled = False
        # spread over the interval, so the sequences of one batch do not all ask in the same step
        self._cancel_checked_at = time.monotonic() - CANCEL_CHECK_S * (hash(request.request_id()) % 97) / 97

    def is_cancelled(self) -> bool:
        """Asks the server (a round trip) at most every CANCEL_CHECK_S; the engine asks every step."""
        now = time.monotonic()
        if not self._cancelled and now - self._cancel_checked_at >= CANCEL_CHECK_S:
            self._cancel_checked_at = now
            self._cancelled = self._request.is_cancelled()
        return self._cancelled

    def _response(self, token_ids: list[int], logprobs: list[float], top: list[list[tuple[int, float]]],
                  cumulative: float) -> pb_utils.InferenceResponse:
        """output_ids and sequence_length always; the optional outputs only when the client asked for them (each
        tensor costs the stub a copy into shared memory). Log-probs cover the generated tokens this response
        carries, shaped like TensorRT-LLM's ([batch 1, beam 1, tokens]; the top ones [1, 1, tokens, k])."""
        ids = np.asarray(token_ids, dtype=np.int32).reshape(1, 1, -1)
        tensors = [pb_utils.Tensor("output_ids", ids),
                   pb_utils.Tensor("sequence_length", np.asarray([[len(token_ids)]], dtype=np.int32))]
        wanted = self._wanted
        k = self._logprobs
        if k is not None:
            if "output_log_probs" in wanted:
                tensors.append(pb_utils.Tensor("output_log_probs",
                                               np.asarray(logprobs, dtype=np.float32).reshape(1, 1, -1)))
            if "cum_log_probs" in wanted:
                tensors.append(pb_utils.Tensor("cum_log_probs", np.asarray([[cumulative]], dtype=np.float32)))
            if k and "output_top_log_probs" in wanted:
                values = np.asarray([[v for _, v in row] for row in top], dtype=np.float32).reshape(1, 1, -1, k)
                tensors.append(pb_utils.Tensor("output_top_log_probs", values))
            if k and "output_top_log_prob_ids" in wanted:
                top_ids = np.asarray([[t for t, _ in row] for row in top], dtype=np.int32).reshape(1, 1, -1, k)
                tensors.append(pb_utils.Tensor("output_top_log_prob_ids", top_ids))
        if "kv_cache_reused_blocks" in wanted:
            reused_blocks = self._cached_tokens // self._model.engine.blocks.block_size
            tensors.append(pb_utils.Tensor("kv_cache_reused_blocks", np.asarray([[reused_blocks]], dtype=np.int32)))
        if "arrival_time_ns" in wanted:
            tensors.append(pb_utils.Tensor("arrival_time_ns", np.asarray([[self._arrival_ns]], dtype=np.int64)))
        if "first_token_time_ns" in wanted:
            tensors.append(pb_utils.Tensor("first_token_time_ns",
                                           np.asarray([[self._first_token_ns]], dtype=np.int64)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def emit(self, output: StepOutput) -> None:
        self._cached_tokens = output.cached_tokens
        if output.logprobs is not None:
            self._collected_logprobs.extend(output.logprobs)
            self._collected_top.extend(output.top_logprobs or [[] for _ in output.logprobs])
        self._tokens_sent += len(output.new_token_ids)
        if output.new_token_ids and not self._first_token_ns:
            self._first_token_ns = time.time_ns()
            self._model.metrics.observe_first_token(self._arrival_ns)
        self._model.metrics.count_tokens(len(output.new_token_ids))
        if output.finished:
            self._model.metrics.finish(output.finish_reason)
            if self._tokens_sent > 1 and self._first_token_ns:
                self._model.metrics.observe_tpot((time.time_ns() - self._first_token_ns) / 1e9 /
                                                 (self._tokens_sent - 1))
        if output.finish_reason is FinishReason.CANCELLED:
            # Tokens generated but not yet sent (coalesced) still go out, so the client can count every token
            # the engine produced; a cancelled gRPC stream simply drops them.
            self._send(self._collected if self._streaming and self._collected else None, FINAL)
            self._collected = []
            return
        self._collected.extend(output.new_token_ids)
        if self._streaming:
            # The first two tokens go out at once (TTFT, and the end of the first word for a client that shows
            # whole words); under load later tokens are coalesced into fewer responses, since each response costs
            # the Python backend a fixed ~0.1-0.3 ms (engine/streaming.py).
            if self._words and not self._word_ended:
                self._word_ended = bool(self._model.word_breaks[output.new_token_ids].any())
            if output.finished or self._model.stream_due(self._tokens_sent, len(self._collected), self._words,
                                                          self._word_ended):
                self._send(self._collected, FINAL if output.finished else 0)
                self._collected = []
                self._word_ended = False
            return
        if output.finished:
            self._send(self._collected if self._exclude_input else self._prompt_ids + self._collected, FINAL)

    def _send(self, token_ids: list[int] | None, flags: int) -> None:
        """Queues a response with these tokens (None: only the flags) for the outbox thread; the log-probs collected
        since the last response go with them."""
        logprobs, top = self._collected_logprobs, self._collected_top
        self._collected_logprobs, self._collected_top = [], []
        self._cum_logprob += sum(logprobs)
        cumulative = self._cum_logprob

        def send() -> None:
            if token_ids is not None:
                self._sender.send(self._response(token_ids, logprobs, top, cumulative), flags=flags)
            else:
                self._sender.send(flags=flags)

        self._model.outbox.put(send)

    def fail(self, error: Exception) -> None:
        self._model.metrics.finish(None)
        message = str(error)
        self._model.outbox.put(lambda: self._sender.send(
            pb_utils.InferenceResponse(error=pb_utils.TritonError(message)), flags=FINAL))


class _Metrics:
    """Engine metrics on Triton's metrics port, labelled by model and version."""

    def __init__(self, model_name: str, version: str, engine: Engine) -> None:
        self._engine = engine
        labels = {"model": model_name, "version": version}
        mf = pb_utils.MetricFamily
        # Families must outlive their metrics, so they are kept on the object.
        self._families = {name: mf(name, doc, kind) for name, doc, kind in [
            ("sluice_engine_requests_total", "Finished requests by outcome", mf.COUNTER),
            ("sluice_engine_output_tokens_total", "Generated tokens", mf.COUNTER),
            ("sluice_engine_requests_running", "Sequences in the running batch", mf.GAUGE),
            ("sluice_engine_requests_waiting", "Sequences waiting for admission", mf.GAUGE),
            ("sluice_engine_kv_blocks_used", "KV-cache blocks held by sequences", mf.GAUGE),
            ("sluice_engine_kv_blocks_free", "KV-cache blocks free (cached ones included)", mf.GAUGE),
            ("sluice_engine_kv_utilisation", "Share of KV-cache blocks in use", mf.GAUGE),
            ("sluice_engine_kv_blocks_cached", "Blocks registered for prefix reuse", mf.GAUGE),
            ("sluice_engine_prefix_queried_tokens_total", "Prompt tokens looked up in the prefix cache", mf.COUNTER),
            ("sluice_engine_prefix_hit_tokens_total", "Prompt tokens served from the prefix cache", mf.COUNTER),
            ("sluice_engine_preemptions_total", "Sequences preempted for lack of KV blocks", mf.COUNTER),
            ("sluice_engine_batch_size", "Sequences per engine step", mf.HISTOGRAM),
            ("sluice_engine_step_tokens", "Tokens computed per engine step", mf.HISTOGRAM),
            ("sluice_engine_ttft_seconds", "Arrival to first token", mf.HISTOGRAM),
            ("sluice_engine_tpot_seconds", "Mean time per output token after the first", mf.HISTOGRAM),
        ]}

        def metric(name: str, **extra: object):
            return self._families[name].Metric(labels={**labels, **extra.pop("labels", {})}, **extra)

        self._outcomes = {reason: metric("sluice_engine_requests_total", labels={"outcome": reason})
                          for reason in ("stop", "length", "cancelled", "error")}
        self._tokens = metric("sluice_engine_output_tokens_total")
        self._gauges = {name: metric(name) for name in (
            "sluice_engine_requests_running", "sluice_engine_requests_waiting", "sluice_engine_kv_blocks_used",
            "sluice_engine_kv_blocks_free", "sluice_engine_kv_utilisation", "sluice_engine_kv_blocks_cached")}
        self._counters = {name: metric(name) for name in (
            "sluice_engine_prefix_queried_tokens_total", "sluice_engine_prefix_hit_tokens_total",
            "sluice_engine_preemptions_total")}
        self._counted = dict.fromkeys(self._counters, 0)
        self._batch = metric("sluice_engine_batch_size", buckets=[1, 2, 4, 8, 16, 32, 64, 128])
        self._step_tokens = metric("sluice_engine_step_tokens", buckets=[1, 4, 16, 64, 256, 1024, 4096])
        latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
        self._ttft = metric("sluice_engine_ttft_seconds", buckets=latency)
        self._tpot = metric("sluice_engine_tpot_seconds", buckets=latency)
        self._pending_tokens = 0  # counted since the last step was reported
        self._refreshed_at = 0.0
        self.refresh()

    def on_step(self, batch: ScheduledBatch) -> None:
        """After every engine step (on the engine thread). Each metric update is a round trip to the server, so
        token counts are added up over the step and the gauges are refreshed at most every GAUGE_REFRESH_S."""
        if batch:
            self._batch.observe(len(batch.seqs))
            self._step_tokens.observe(batch.total_tokens)
        self._push_tokens()
        now = time.monotonic()
        if now - self._refreshed_at >= GAUGE_REFRESH_S:
            self._refreshed_at = now
            self.refresh()

    def _push_tokens(self) -> None:
        if self._pending_tokens:
            self._tokens.increment(self._pending_tokens)
            self._pending_tokens = 0

    def refresh(self) -> None:
        stats = self._engine.stats()
        for name, value in (("sluice_engine_requests_running", stats.running),
                            ("sluice_engine_requests_waiting", stats.waiting),
                            ("sluice_engine_kv_blocks_used", stats.kv_blocks_used),
                            ("sluice_engine_kv_blocks_free", stats.kv_blocks_total - stats.kv_blocks_used),
                            ("sluice_engine_kv_utilisation", stats.kv_utilisation),
                            ("sluice_engine_kv_blocks_cached", stats.kv_blocks_cached)):
            self._gauges[name].set(value)
        for name, total in (("sluice_engine_prefix_queried_tokens_total", stats.prefix_queried_tokens),
                            ("sluice_engine_prefix_hit_tokens_total", stats.prefix_hit_tokens),
                            ("sluice_engine_preemptions_total", stats.preemptions)):
            if total > self._counted[name]:
                self._counters[name].increment(total - self._counted[name])
                self._counted[name] = total

    def observe_first_token(self, arrival_ns: int) -> None:
        self._ttft.observe((time.time_ns() - arrival_ns) / 1e9)

    def observe_tpot(self, seconds: float) -> None:
        self._tpot.observe(seconds)

    def count_tokens(self, n: int) -> None:
        self._pending_tokens += n

    def finish(self, reason: FinishReason | None) -> None:
        """Also pushes the tokens counted so far and refreshes the gauges (the engine has already let the request
        go), so a client that saw its last response reads metrics that include it."""
        self._push_tokens()
        self._refreshed_at = time.monotonic()
        self.refresh()
        self._outcomes[reason.value if reason else "error"].increment(1)  # last: a reader that sees it sees the rest


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        watch_server()
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("tensorrt_llm must be decoupled (model_transaction_policy)")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads") or 1)
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, _ = load_checkpoint(params["checkpoint_dir"], dtype=torch.float32, device=device)
        config = EngineConfig(
            block_size=int(params.get("kv_block_size") or DEFAULT_BLOCK_SIZE),
            kv_cache_bytes=int(params.get("kv_cache_bytes") or 256 * 1024 * 1024),
            max_num_seqs=int(params.get("max_num_seqs") or 64),
            max_num_batched_tokens=int(params.get("max_num_batched_tokens") or 512),
            max_seq_len=int(params.get("max_seq_len") or 0) or None,
            enable_prefix_caching=params.get("enable_kv_cache_reuse", "true").lower() in ("1", "true", "yes"),
            cache_salt=params["checkpoint_dir"], max_threads=threads,
            parallel_min_tokens=int(params.get("parallel_min_tokens") or 32),
            matmul_dtype=None if params.get("matmul_dtype", "float32") in ("", "float32") else params["matmul_dtype"])
        guided = GuidedDecoding.from_checkpoint(params["checkpoint_dir"], model.args.vocab_size,
                                                threads=max(1, threads))
        self.engine = Engine(model, config, guided)
        self.outbox = _Outbox()
        self.metrics = _Metrics(args["model_name"], args["model_version"], self.engine)
        self.engine.step_listener = self.metrics.on_step
        self._stream_interval = StreamInterval.parse(params.get("stream_interval_tiers") or "8:2,32:4,48:8")
        self.word_breaks = _word_breaks(params["checkpoint_dir"], model.args.vocab_size)
        self.engine.start()

    def stream_due(self, tokens_generated: int, tokens_waiting: int, words: bool = False,
                   word_ended: bool = False) -> bool:
        return self._stream_interval.due(tokens_generated, tokens_waiting, len(self.engine.scheduler.running),
                                         words=words, word_ended=word_ended)

    def execute(self, requests: list) -> None:
        for request in requests:
            arrival_ns = time.time_ns()
            if _scalar(request, "stop", False, bool):  # TensorRT-LLM's way to end a running request by its id
                self.engine.cancel(request.request_id())
                request.get_response_sender().send(flags=FINAL)
                continue
            try:
                generation, sink = self._parse(request, arrival_ns)
                self.engine.submit(generation, sink)
            except Exception as exc:  # bad input: this request's error, nobody else's
                request.get_response_sender().send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"invalid request: {exc}")), flags=FINAL)
        return None

    def _parse(self, request, arrival_ns: int) -> tuple[GenerationRequest, _ResponseSink]:
        input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
        length = _scalar(request, "input_lengths", input_ids.size, int)
        if not 0 < length <= input_ids.size:
            raise ValueError(f"input_lengths {length} does not fit input_ids of {input_ids.size}")
        prompt = [int(t) for t in input_ids[:length]]
        params = SamplingParams(
            max_tokens=_scalar(request, "request_output_len", 16, int),
            temperature=_scalar(request, "temperature", 1.0, float),
            top_k=_scalar(request, "runtime_top_k", 0, int),
            top_p=_scalar(request, "runtime_top_p", 1.0, float) or 1.0,
            seed=_scalar(request, "seed", None, int),
            repetition_penalty=_scalar(request, "repetition_penalty", 1.0, float),
            presence_penalty=_scalar(request, "presence_penalty", 0.0, float),
            frequency_penalty=_scalar(request, "frequency_penalty", 0.0, float),
            min_tokens=_scalar(request, "min_tokens", 0, int),
            end_id=_scalar(request, "end_id", None, int),
            stop_token_seqs=_word_lists(request, "stop_words_list"),
            bad_token_seqs=_word_lists(request, "bad_words_list"),
        )
        top = _scalar(request, "num_top_log_probs", 0, int)
        logprobs = top if _scalar(request, "return_log_probs", False, bool) or top else None
        generation = GenerationRequest(
            request_id=request.request_id() or f"triton-{arrival_ns}",
            prompt_ids=prompt, params=params, priority=_scalar(request, "priority", 0, int),
            cache_salt_id=_scalar(request, "cache_salt_id", None, int), guide=_guide(request), logprobs=logprobs)
        sink = _ResponseSink(self, request, prompt, streaming=_scalar(request, "streaming", False, bool),
                             exclude_input=_scalar(request, "exclude_input_in_output", False, bool),
                             arrival_ns=arrival_ns, logprobs=logprobs,
                             words=bool(_parameters(request).get(STREAM_WORDS_PARAMETER, False)))
        return generation, sink

    def finalize(self) -> None:
        self.engine.shutdown()
        if self.engine.guided is not None:
            self.engine.guided.close()
        self.outbox.close()
