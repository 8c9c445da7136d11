"""`sluice bench engine`: the in-process engine's throughput and latency by batching mode and concurrency, prefix
reuse, KV-cache waste, and peers (Hugging Face generate, vLLM on CPU) on the same checkpoints and prompts.

Everything is measured side by side in one run, so ratios between modes are meaningful even on a shared machine;
absolute figures depend on what else the machine was doing (the JSON records the load average before and after).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from engine.model import Llama, ModelArgs, load_checkpoint, save_checkpoint
from services.bench import peers
from services.bench.chart import write_chart
from services.bench.drivers import MODES, run_mode, run_prefix_reuse, warm_up
from services.bench.machine import machine_info
from services.bench.workload import (
    RequestSpec,
    chat_length_workload,
    fixed_workload,
    mixed_workload,
    shared_prefix_workload,
    static_batching_ceiling,
)

TARGETS = {
    "inflight_vs_sequential_at_32": 8.0,  # ≥
    "inflight_vs_static_at_32": 2.0,  # ≥ (both output-length mixes)
    "prefix_ttft_p50_ratio": 0.5,  # ≤ (reuse on / off)
    "kv_waste": 0.04,  # <
    "inflight_vs_vllm_best_offline": 1.5,  # ≥
}

# The demo model's shape (pipelines/demo_model/train.py), used with random weights when the checkpoint is absent.
DEMO_ARGS = dict(vocab_size=1024, hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=8,
                 num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True)
# ~110M parameters (tied embeddings): the "larger random-initialised Llama" of the issue.
LARGE_ARGS = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048,
                  tie_word_embeddings=True)


@dataclass(frozen=True)
class Profile:
    concurrencies: tuple[int, ...] = (1, 8, 32, 64)
    rounds: int = 3  # static / in-flight runs get rounds × concurrency requests
    sequential_requests: int = 12
    prompt_len: tuple[int, int] = (16, 128)
    output_len: tuple[int, int] = (16, 256)
    prefix_requests: int = 32
    prefix_system_len: int = 512
    prefix_user_len: int = 16
    prefix_output_len: int = 16
    prefix_arrivals: tuple[str, ...] = ("sequential", "burst")
    chat_lengths_concurrency: int = 32  # in-flight vs static on chat-like (log-normal) output lengths; 0: skip
    chat_lengths_rounds: int = 3
    chat_lengths_median: int = 64
    chat_lengths_range: tuple[int, int] = (8, 768)
    peer_requests: int = 64
    peer_output_len: int = 128
    hf_sequential_requests: int = 8


FULL = Profile()
QUICK = Profile(rounds=2, sequential_requests=4, prefix_output_len=8, hf_sequential_requests=4)
# what a model's size changes in a profile (the ~110M model is ~20× the demo model's work per token)
QUICK_LARGE = replace(QUICK, concurrencies=(1, 8, 32), sequential_requests=2, prefix_arrivals=("sequential",))


def _print(message: str) -> None:
    print(message, flush=True)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def random_model(args: dict[str, object], seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(ModelArgs(**args)).eval()


def bench_throughput(model: Llama, profile: Profile, seed: int = 0, log: Callable[[str], None] = _print,
                     matmul_dtype: str | None = None) -> dict[str, dict[str, dict]]:
    """Output tokens/s, TTFT and TPOT for every mode × concurrency, the three modes back to back on the same
    requests (sequential on the first `sequential_requests` of them: one at a time does not depend on concurrency,
    but measuring it next to the others keeps the ratios honest on a machine whose load changes)."""
    vocab = model.args.vocab_size
    out: dict[str, dict[str, dict]] = {mode: {} for mode in MODES}
    for c in profile.concurrencies:
        specs = uniform_workload(profile, vocab, seed, c)
        for mode in MODES:  # fresh engine each
            run_specs = specs[:profile.sequential_requests] if mode == "sequential" else specs
            figures, _ = run_mode(model, mode, run_specs, c, matmul_dtype=matmul_dtype)
            out[mode][str(c)] = figures
            log(f"  {mode:10s} c={c:<3d}: {figures['output_tokens_per_s']} tok/s, TTFT p50 {figures['ttft_ms']['p50']}"
                f" ms, TPOT p50 {figures['tpot_ms']['p50']} ms ({figures['requests']} requests)")
    return out


def bench_chat_lengths(model: Llama, profile: Profile, seed: int = 0, log: Callable[[str], None] = _print,
                       matmul_dtype: str | None = None) -> dict[str, object]:
    """In-flight vs padded static batching at one concurrency on output lengths drawn log-normally (median 64,
    a long tail to 768): the mix where a static batch waits longest on its slowest request. The ceiling is what the
    batch shapes alone allow (services/bench/workload.static_batching_ceiling)."""
    c = profile.chat_lengths_concurrency
    specs = chat_length_workload(profile.chat_lengths_rounds * c, model.args.vocab_size, seed + c, profile.prompt_len,
                                 median_output=profile.chat_lengths_median, output_len=profile.chat_lengths_range)
    runs = {}
    for mode in ("static", "inflight"):
        runs[mode], _ = run_mode(model, mode, specs, c, matmul_dtype=matmul_dtype)
        log(f"  chat lengths {mode:8s} c={c}: {runs[mode]['output_tokens_per_s']} tok/s")
    lengths = sorted(s.output_len for s in specs)
    inflight, static = runs["inflight"]["output_tokens_per_s"], runs["static"]["output_tokens_per_s"]
    return {"concurrency": c, "requests": len(specs),
            "output_len": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1],
                           "mean": round(sum(lengths) / len(lengths), 1)},
            "static_ceiling": round(static_batching_ceiling(specs, c), 2), "throughput": runs,
            "inflight_vs_static": _ratio(inflight, static)}


def uniform_workload(profile: Profile, vocab_size: int, seed: int, concurrency: int) -> list[RequestSpec]:
    """The requests bench_throughput runs at `concurrency`: output lengths drawn uniformly from profile.output_len."""
    return mixed_workload(max(profile.rounds * concurrency, 1), vocab_size, seed + concurrency, profile.prompt_len,
                          profile.output_len)


def uniform_ceilings(profile: Profile, vocab_size: int, seed: int = 0) -> dict[str, float]:
    """static_batching_ceiling of the uniform-length workload bench_throughput ran at each concurrency."""
    return {str(c): round(static_batching_ceiling(uniform_workload(profile, vocab_size, seed, c), c), 2)
            for c in profile.concurrencies if c > 1}


def throughput_ratios(throughput: dict[str, dict[str, dict]]) -> dict[str, dict[str, float | None]]:
    ratios = {}
    for c, run in throughput["inflight"].items():
        seq = throughput["sequential"].get(c, {}).get("output_tokens_per_s")
        static = throughput["static"].get(c, {}).get("output_tokens_per_s")
        shrinking = throughput.get("static_shrinking", {}).get(c, {}).get("output_tokens_per_s")
        ratios[c] = {"inflight_vs_sequential": _ratio(run["output_tokens_per_s"], seq),
                     "inflight_vs_static": _ratio(run["output_tokens_per_s"], static),
                     "inflight_vs_static_shrinking": _ratio(run["output_tokens_per_s"], shrinking),
                     "static_vs_sequential": _ratio(static, seq)}
    return ratios


def bench_prefix(model: Llama, profile: Profile, seed: int = 0,
                 log: Callable[[str], None] = _print) -> dict[str, dict]:
    specs = shared_prefix_workload(profile.prefix_requests, model.args.vocab_size, profile.prefix_system_len,
                                   profile.prefix_user_len, profile.prefix_output_len, seed)
    out = {}
    for arrival in profile.prefix_arrivals:
        on = run_prefix_reuse(model, specs, reuse=True, arrival=arrival)
        off = run_prefix_reuse(model, specs, reuse=False, arrival=arrival)
        ratio = _ratio(on["ttft_ms"]["p50"], off["ttft_ms"]["p50"])
        out[arrival] = {"reuse_on": on, "reuse_off": off, "ttft_p50_ratio": ratio,
                        "hit_rate": on["prefix_hit_rate"]}
        log(f"  prefix reuse ({arrival}): TTFT p50 {on['ttft_ms']['p50']} ms on vs {off['ttft_ms']['p50']} ms off "
            f"(ratio {ratio}), hit rate {on['prefix_hit_rate']:.3f}")
    return out


def kv_waste(throughput: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Slots allocated but not holding a token, summed over every step of the runs (per mode and overall)."""
    out: dict[str, float] = {}
    total_alloc = total_filled = 0
    for mode, runs in throughput.items():
        alloc = sum(r["kv_slots_allocated"] for r in runs.values())
        filled = sum(r["kv_slots_filled"] for r in runs.values())
        total_alloc, total_filled = total_alloc + alloc, total_filled + filled
        out[mode] = round(1 - filled / alloc, 5) if alloc else 0.0
    out["all_runs"] = round(1 - total_filled / total_alloc, 5) if total_alloc else 0.0
    return out


def bench_peers(model: Llama, checkpoint: Path, profile: Profile, threads: int, seed: int = 0,
                log: Callable[[str], None] = _print, dtype: str = "float32",
                matmul_dtype: str | None = None) -> dict[str, object]:
    """`dtype`: the peers' (the checkpoint is written in it); `matmul_dtype`: Sluice's projections (EngineConfig)."""
    """Sluice in-process vs HF generate vs vLLM offline on `peer_requests` prompts × `peer_output_len` tokens."""
    specs = fixed_workload(profile.peer_requests, model.args.vocab_size, profile.peer_output_len, seed + 7,
                           profile.prompt_len)
    sluice, _ = run_mode(model, "inflight", specs, len(specs), matmul_dtype=matmul_dtype)
    out: dict[str, object] = {
        "workload": {"requests": len(specs), "output_len": profile.peer_output_len, "peer_dtype": dtype,
                     "sluice_matmul_dtype": matmul_dtype or "float32",
                     "prompt_len": list(profile.prompt_len)},
        "sluice_inflight_offline": sluice}
    log(f"  peers: sluice in-process {sluice['output_tokens_per_s']} tok/s")
    with tempfile.TemporaryDirectory() as tmp:
        workload = peers.write_workload(specs, profile.peer_output_len, Path(tmp) / "workload.json")
        out["hf_generate"] = peers.run_hf(checkpoint, workload, threads, profile.hf_sequential_requests, dtype=dtype)
        log(f"  peers: hf {_peer_line(out['hf_generate'])}")
        for eager in (True, False):
            key = "vllm_offline_eager" if eager else "vllm_offline_compiled"
            out[key] = peers.run_vllm(checkpoint, workload, eager, threads, dtype=dtype)
            log(f"  peers: {key} {_peer_line(out[key])}")
    vllm_best = max((r["output_tokens_per_s"] for k, r in out.items()
                     if k.startswith("vllm") and isinstance(r, dict) and r.get("status") == "ok"), default=None)
    out["inflight_vs_vllm_best_offline"] = _ratio(sluice["output_tokens_per_s"], vllm_best)
    return out


def _peer_line(result: object) -> str:
    if not isinstance(result, dict) or result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('reason')}" if isinstance(result, dict) else str(result)
    if "results" in result:
        return ", ".join(f"{k} {v['output_tokens_per_s']} tok/s" for k, v in result["results"].items())
    return f"{result['output_tokens_per_s']} tok/s"


def bench_model(name: str, model: Llama, source: str, profile: Profile, *, checkpoint: Path | None = None,
                threads: int = 2, with_peers: bool = False, log: Callable[[str], None] = _print,
                peer_dtype: str = "float32", matmul_dtype: str | None = None) -> dict[str, object]:
    params = sum(p.numel() for p in model.parameters())
    log(f"[{name}] {params / 1e6:.1f}M parameters — {source}")
    warm_up(model, mixed_workload(4, model.args.vocab_size, 99, profile.prompt_len, (4, 4)))
    started = time.perf_counter()
    throughput = bench_throughput(model, profile, log=log, matmul_dtype=matmul_dtype)
    figures: dict[str, object] = {
        "source": source, "profile": asdict(profile),
        "params": params, "params_m": round(params / 1e6, 2), "args": asdict(model.args),
        "throughput": throughput, "ratios": throughput_ratios(throughput), "kv_waste": kv_waste(throughput),
        "static_ceiling": uniform_ceilings(profile, model.args.vocab_size)}
    if profile.chat_lengths_concurrency:
        figures["chat_lengths"] = bench_chat_lengths(model, profile, log=log, matmul_dtype=matmul_dtype)
    if profile.prefix_requests:
        figures["prefix_reuse"] = bench_prefix(model, profile, log=log)
    if with_peers and checkpoint is not None:
        figures["peers"] = bench_peers(model, checkpoint, profile, threads, log=log, dtype=peer_dtype,
                                       matmul_dtype=matmul_dtype)
    figures["elapsed_s"] = round(time.perf_counter() - started, 2)
    return figures


def target_summary(models: dict[str, dict]) -> list[dict[str, object]]:
    rows = []

    def add(model: str, name: str, value: float | None, target: float, better: str) -> None:
        met = None if value is None else (value >= target if better == ">=" else
                                          value <= target if better == "<=" else value < target)
        rows.append({"model": model, "target": f"{name} {better} {target}", "value": value, "met": met})

    for name, fig in models.items():
        r32 = fig["ratios"].get("32", {})
        add(name, "in-flight / sequential tokens/s at c=32", r32.get("inflight_vs_sequential"),
            TARGETS["inflight_vs_sequential_at_32"], ">=")
        add(name, "in-flight / static tokens/s at c=32 (uniform output lengths)", r32.get("inflight_vs_static"),
            TARGETS["inflight_vs_static_at_32"], ">=")
        chat = fig.get("chat_lengths")
        if chat:
            add(name, f"in-flight / static tokens/s at c={chat['concurrency']} (log-normal output lengths)",
                chat["inflight_vs_static"], TARGETS["inflight_vs_static_at_32"], ">=")
        for arrival, pr in fig.get("prefix_reuse", {}).items():
            add(name, f"prefix TTFT p50 on/off ({arrival} arrival)", pr["ttft_p50_ratio"],
                TARGETS["prefix_ttft_p50_ratio"], "<=")
        add(name, "KV waste (all runs)", fig["kv_waste"]["all_runs"], TARGETS["kv_waste"], "<")
        if "peers" in fig:
            add(name, "in-process / vLLM best offline tokens/s", fig["peers"]["inflight_vs_vllm_best_offline"],
                TARGETS["inflight_vs_vllm_best_offline"], ">=")
    return rows


def _demo_model(path: Path) -> tuple[Llama, str, Path | None]:
    if (path / "config.json").exists() and any(path.glob("*.safetensors")):
        model, _ = load_checkpoint(path, dtype=torch.float32)
        return model, f"checkpoint {path}", path
    return random_model(DEMO_ARGS), f"random weights, demo shape ({path} has no checkpoint yet)", None


def run(results_dir: Path, model_path: Path = Path("models/sluice-demo"), *, quick: bool = False, threads: int = 2,
        models: Sequence[str] = ("demo", "llama-110m"), with_peers: bool = True, all_peers: bool = False,
        peer_dtype: str = "float32", matmul_dtype: str | None = None,
        log: Callable[[str], None] = _print) -> dict[str, object]:
    """Sluice's engine holds the model in float32; `matmul_dtype` bfloat16 runs its projections in bfloat16 (AMX),
    None keeps the float32 reference numerics. `peer_dtype`: what the peers load and compute in."""
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    results_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load = os.getloadavg()[0]
    if threads > 1 and load > 0.5:  # measured here: 2 threads on a loaded 2-core box ran ~9× slower than 1 thread
        log(f"warning: load average {load:.1f} before the run; with {threads} torch threads the figures suffer from "
            "oversubscription (try --threads 1 on a shared machine)")
    results: dict[str, object] = {
        "meta": {**machine_info(), "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "quick": quick,
                 "torch_threads": torch.get_num_threads(), "peer_dtype": peer_dtype,
                 "sluice_matmul_dtype": matmul_dtype or "float32", "loadavg_start": list(os.getloadavg()),
                 "notes": ["at each concurrency c the three modes run back to back on the same rounds*c requests "
                           "(sequential = one at a time, on the first sequential_requests of them), a fresh engine "
                           "each, the KV pool sized for c of the longest requests",
                           "TTFT is measured from submission to the engine (for static batching: batch start); "
                           "TPOT = (last token - first token) / (tokens - 1); output lengths are exact "
                           "(min_tokens = max_tokens, no end id)"]},
        "targets": TARGETS, "models": {}}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        for name in models:
            if name == "demo":
                model, source, checkpoint = _demo_model(model_path)
                profile = QUICK if quick else FULL
            elif name == "llama-110m":
                model, source, checkpoint = random_model(LARGE_ARGS), "random weights (seed 0)", None
                profile = QUICK_LARGE if quick else FULL
            else:
                raise ValueError(f"unknown model {name!r} (demo, llama-110m)")
            peer_wanted = with_peers and (name == "demo" or not quick or all_peers)
            if peer_wanted and checkpoint is None:  # peers load the very same weights from a checkpoint
                checkpoint = Path(tmp) / name
                save_checkpoint(model, model.args, checkpoint, dtype=getattr(torch, peer_dtype))
            results["models"][name] = bench_model(name, model, source, profile, checkpoint=checkpoint,
                                                  threads=threads, with_peers=peer_wanted, log=log,
                                                  peer_dtype=peer_dtype, matmul_dtype=matmul_dtype)
            del model
    results["summary"] = target_summary(results["models"])
    results["meta"]["finished_utc"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["meta"]["loadavg_end"] = list(os.getloadavg())
    results["meta"]["elapsed_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    (results_dir / "engine_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    why = write_chart(results, results_dir / "engine_bench.png")
    results["meta"]["chart"] = why or str(results_dir / "engine_bench.png")
    log(format_table(results))
    return results


def format_table(results: dict) -> str:
    lines = []
    for name, fig in results["models"].items():
        lines.append(f"\n{name} ({fig['params_m']}M, {fig['source']})")
        lines.append(f"{'mode':16s} {'c':>3s} {'tok/s':>8s} {'TTFT p50':>9s} {'p95':>8s} {'TPOT p50':>9s} {'p95':>8s}")
        for mode, runs in fig["throughput"].items():
            for c, r in runs.items():
                lines.append(f"{mode:16s} {c:>3s} {r['output_tokens_per_s']:>8.1f} {r['ttft_ms']['p50']:>9.1f} "
                             f"{r['ttft_ms']['p95']:>8.1f} {_fmt(r['tpot_ms']['p50']):>9s} "
                             f"{_fmt(r['tpot_ms']['p95']):>8s}")
    lines.append("\ntargets:")
    for row in results.get("summary", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[row["met"]]
        lines.append(f"  [{mark:6s}] {row['model']}: {row['target']} — {row['value']}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"
