"""CPU time of the stack's processes, read from /proc (utime + stime), so a benchmark can say what each process
spends per streamed token. Triton's Python-backend stubs (one process per model instance) are counted apart from
tritonserver itself and named after their model, because the LLM slot's stub is the engine while the
`safety_classifier` and `embedder` stubs are platform cost.

    before = cpu_snapshot(stack_pids(settings))
    ... drive the workload ...
    spent = cpu_delta(before, cpu_snapshot(stack_pids(settings)))   # {"orchestrator": 812.5, ...} in ms
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from services.bench.proc_memory import children_by_parent

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# Not platform cost: the inference server and the model stubs that make up the LLM slot.
ENGINE_PROCESSES = frozenset({"tritonserver", "triton:preprocessing", "triton:postprocessing", "triton:ensemble"})
ENGINE_MODEL_PREFIX = "triton:tensorrt_llm"  # the LLM slots: tensorrt_llm, tensorrt_llm_small, ...
_MODEL_PATH = re.compile(r"/([\w.-]+)/\d+/model\.py")


def is_engine(name: str) -> bool:
    return name in ENGINE_PROCESSES or name.startswith(ENGINE_MODEL_PREFIX)


def cpu_ms(pid: int) -> float | None:
    """User + system CPU of one process (all its threads) in ms; None when it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * 1000.0 / TICKS_PER_S  # utime, stime (fields 14 and 15)


def _model_of(pid: int) -> str | None:
    """The model a Triton Python-backend stub serves, from its command line."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        match = _MODEL_PATH.search(arg.decode(errors="replace"))
        if match:
            return match.group(1)
    return None


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU ms per named process tree. A Triton process (name starting with "triton") is split into `tritonserver`
    and one `triton:<model>` entry per model stub; every other name counts with all its descendants."""
    children = children_by_parent()
    totals: dict[str, float] = {}
    for name, pid in pids.items():
        if name == "whole_stack":
            continue
        own = cpu_ms(pid)
        if own is None:
            continue
        split_models = name.startswith("triton")
        key = "tritonserver" if split_models else name
        totals[key] = totals.get(key, 0.0) + own
        stack = list(children.get(pid, ()))
        while stack:
            child = stack.pop()
            spent = cpu_ms(child) or 0.0
            model = _model_of(child) if split_models else None
            child_key = f"triton:{model}" if model else key
            totals[child_key] = totals.get(child_key, 0.0) + spent
            stack.extend(children.get(child, ()))
    return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU ms spent per process between two snapshots (a process that appeared counts from zero)."""
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in sorted(after)}


def per_token(spent_ms: dict[str, float], tokens: int) -> dict[str, float]:
    """ms per streamed token for each process plus `platform` (everything but the engine) and `engine`."""
    if tokens <= 0:
        return {}
    out = {name: round(ms / tokens, 4) for name, ms in spent_ms.items()}
    engine = {n for n in spent_ms if is_engine(n)}
    out["platform"] = round(sum(ms for n, ms in spent_ms.items() if n not in engine) / tokens, 4)
    out["engine"] = round(sum(ms for n, ms in spent_ms.items() if n in engine) / tokens, 4)
    return out
