"""How the benchmark drives one in-process Engine: sequential, static batches, in-flight batching, prefix reuse.

Every mode is a closed loop of `concurrency` clients over the same request list. TTFT is measured from the moment a
request is handed to the engine (for static batching: when its batch starts, i.e. after the previous batch drained).

Static batching is run as static batchers run it: a batch has a fixed shape, so every row is computed until the
batch's longest request is done (rows past their own length generate padding, which counts as no output) and the
next batch starts after that. "static_shrinking" is a kinder variant that drops finished rows from the compute but
still waits for the whole batch before admitting new requests: it isolates the cost of waiting alone.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence

import torch

from engine.block_manager import DEFAULT_BLOCK_SIZE
from engine.engine import Engine, EngineConfig
from engine.model import Llama
from engine.request import GenerationRequest
from engine.sampling import SamplingParams
from services.bench.metrics import TimingSink, summarize
from services.bench.workload import RequestSpec

MODES = ("sequential", "static", "static_shrinking", "inflight")


def engine_for(model: Llama, specs: Sequence[RequestSpec], concurrency: int, *, block_size: int = DEFAULT_BLOCK_SIZE,
               max_num_batched_tokens: int = 512, prefix_caching: bool = True,
               matmul_dtype: str | None = None) -> Engine:
    """An engine whose KV pool holds `concurrency` of the longest requests at once, so no mode is preempted for lack
    of memory (any preemption still shows in the stats)."""
    longest = max(len(s.prompt_ids) + s.output_len for s in specs) + 1
    num_blocks = concurrency * math.ceil(longest / block_size) + 4
    return Engine(model, EngineConfig(block_size=block_size, num_blocks=num_blocks,
                                      max_num_seqs=max(concurrency, 1),
                                      max_num_batched_tokens=max_num_batched_tokens,
                                      enable_prefix_caching=prefix_caching, matmul_dtype=matmul_dtype))


def _submit(engine: Engine, spec: RequestSpec, computed_len: int | None = None) -> TimingSink:
    """Submits `spec`; `computed_len` > its output length runs the row on as padding (a static batch's shape)."""
    sink = TimingSink(spec.request_id, spec.output_len)
    length = max(spec.output_len, computed_len or 0)
    params = SamplingParams(max_tokens=length, min_tokens=length, temperature=0.0, end_id=None)
    sink.submitted = time.perf_counter()
    engine.submit(GenerationRequest(spec.request_id, list(spec.prompt_ids), params), sink)
    return sink


def _engine_figures(engine: Engine) -> dict[str, object]:
    st = engine.stats()
    return {"steps": st.steps, "preemptions": st.preemptions, "kv_waste": round(st.kv_waste, 5),
            "kv_slots_allocated": st.kv_slots_allocated, "kv_slots_filled": st.kv_slots_filled,
            "kv_blocks_total": st.kv_blocks_total, "prefix_queried_tokens": st.prefix_queried_tokens,
            "prefix_hit_tokens": st.prefix_hit_tokens,
            "prefix_hit_rate": round(st.prefix_hit_tokens / st.prefix_queried_tokens, 5)
            if st.prefix_queried_tokens else 0.0}


@torch.inference_mode()
def run_sequential(engine: Engine, specs: Sequence[RequestSpec]) -> tuple[dict[str, object], list[TimingSink]]:
    """One request at a time: submit, run to completion, next."""
    sinks: list[TimingSink] = []
    start = time.perf_counter()
    for spec in specs:
        sinks.append(_submit(engine, spec))
        engine.run_until_done()
    wall = time.perf_counter() - start
    return {**summarize(sinks, wall), **_engine_figures(engine)}, sinks


@torch.inference_mode()
def run_static(engine: Engine, specs: Sequence[RequestSpec], concurrency: int,
               padded: bool = True) -> tuple[dict[str, object], list[TimingSink]]:
    """Static batching: take `concurrency` requests, run the whole batch to completion, then the next batch.
    `padded`: every row runs until the batch's longest request is done (a fixed batch shape)."""
    sinks: list[TimingSink] = []
    start = time.perf_counter()
    for i in range(0, len(specs), concurrency):
        batch = specs[i:i + concurrency]
        longest = max(spec.output_len for spec in batch) if padded else None
        sinks.extend(_submit(engine, spec, longest) for spec in batch)
        engine.run_until_done()
    wall = time.perf_counter() - start
    return {**summarize(sinks, wall), **_engine_figures(engine)}, sinks


@torch.inference_mode()
def run_inflight(engine: Engine, specs: Sequence[RequestSpec],
                 concurrency: int) -> tuple[dict[str, object], list[TimingSink]]:
    """In-flight batching: keep `concurrency` requests in the engine, submitting the next as soon as one finishes."""
    pending = deque(specs)
    active: list[TimingSink] = []
    sinks: list[TimingSink] = []
    start = time.perf_counter()
    while pending and len(active) < concurrency:
        active.append(_submit(engine, pending.popleft()))
    sinks.extend(active)
    while active:
        if not engine.step() and not engine.has_work():
            break  # nothing left to run although requests are active: they failed or the engine lost them
        still = [s for s in active if not s.finished]
        for _ in range(len(active) - len(still)):
            if pending:
                sink = _submit(engine, pending.popleft())
                still.append(sink)
                sinks.append(sink)
        active = still
    wall = time.perf_counter() - start
    return {**summarize(sinks, wall), **_engine_figures(engine)}, sinks


def run_mode(model: Llama, mode: str, specs: Sequence[RequestSpec], concurrency: int,
             **engine_kw: object) -> tuple[dict[str, object], list[TimingSink]]:
    """A fresh engine per run (empty prefix cache, per-run KV statistics)."""
    engine = engine_for(model, specs, 1 if mode == "sequential" else concurrency, **engine_kw)
    if mode == "sequential":
        return run_sequential(engine, specs)
    if mode in ("static", "static_shrinking"):
        return run_static(engine, specs, concurrency, padded=mode == "static")
    if mode == "inflight":
        return run_inflight(engine, specs, concurrency)
    raise ValueError(f"unknown mode {mode!r}")


def run_prefix_reuse(model: Llama, specs: Sequence[RequestSpec], *, reuse: bool,
                     arrival: str = "sequential") -> dict[str, object]:
    """Requests sharing a system prompt, with the prefix cache on or off.

    arrival="sequential": one request at a time (TTFT is the prefill of what is not cached);
    arrival="burst": all submitted at once and run in-flight (TTFT includes queueing behind other prefills)."""
    concurrency = 1 if arrival == "sequential" else len(specs)
    engine = engine_for(model, specs, concurrency, prefix_caching=reuse)
    if arrival == "sequential":
        figures, _ = run_sequential(engine, specs)
    elif arrival == "burst":
        figures, _ = run_inflight(engine, specs, concurrency)
    else:
        raise ValueError(f"unknown arrival {arrival!r}")
    return figures


@torch.inference_mode()
def warm_up(model: Llama, specs: Sequence[RequestSpec]) -> None:
    """A few short requests through a throwaway engine so first-call costs stay out of the measurements."""
    short = [RequestSpec(f"warm-{i}", list(s.prompt_ids), min(4, s.output_len)) for i, s in enumerate(specs[:4])]
    engine = engine_for(model, short, len(short))
    for spec in short:
        _submit(engine, spec)
    engine.run_until_done()
