"""Runs the peer engines (Hugging Face generate, vLLM) as subprocesses in their own virtualenvs.

Each peer is optional: when its virtualenv is missing or the run fails, the result says so and why instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from services.bench.workload import RequestSpec

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def write_workload(specs: list[RequestSpec], output_len: int, path: Path) -> Path:
    path.write_text(json.dumps({"prompts": [s.prompt_ids for s in specs], "output_len": output_len}))
    return path


def _run(python: Path, script: str, args: list[str], env: dict[str, str], timeout_s: float,
         make_target: str) -> dict[str, object]:
    if not python.exists():
        return {"status": "skipped", "reason": f"{python.relative_to(ROOT)} is missing (run `make {make_target}`)"}
    cmd = [str(python), str(HERE / script), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **env},
                              cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s", "command": cmd}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"status": "failed", "reason": f"exit {proc.returncode}", "stderr_tail": tail, "command": cmd}
    return {"status": "ok", **json.loads(lines[-1])}


def run_hf(model_dir: Path, workload: Path, threads: int, sequential_requests: int,
           timeout_s: float = 900, dtype: str = "float32") -> dict[str, object]:
    return _run(BENCH_PYTHON, "hf_peer.py", ["--model", str(model_dir), "--workload", str(workload),
                                             "--threads", str(threads), "--batch-sizes", "1,16,64",
                                             "--sequential-requests", str(sequential_requests), "--dtype", dtype],
                {}, timeout_s, "bench-venv")


def run_vllm(model_dir: Path, workload: Path, eager: bool, threads: int, timeout_s: float = 900,
             dtype: str = "float32") -> dict[str, object]:
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{max(threads, 1) - 1}", "TOKENIZERS_PARALLELISM": "false"}
    args = ["--model", str(model_dir), "--workload", str(workload), "--dtype", dtype] + (["--eager"] if eager else [])
    return _run(VLLM_PYTHON, "vllm_peer.py", args, env, timeout_s, "vllm-venv")

