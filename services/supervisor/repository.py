"""Render the Triton model repository from model_repository/ templates (one template source per engine)."""

from __future__ import annotations

import shutil
import string
import sys
from pathlib import Path

from engine.block_manager import DEFAULT_BLOCK_SIZE
from services.common.settings import REPO_ROOT, Settings
from services.orchestrator.catalog import llm_slots

TEMPLATE_ROOT = REPO_ROOT / "model_repository"
LLM_SLOT = "tensorrt_llm"  # the template folder of the LLM slot
ENGINES = ("cpu", "trtllm")


def _template_for(model_dir: Path, engine: str) -> Path:
    specific = model_dir / f"config.{engine}.pbtxt.tmpl"
    if specific.exists():
        return specific
    shared = model_dir / "config.pbtxt.tmpl"
    if shared.exists():
        return shared
    raise FileNotFoundError(f"{model_dir.name}: no config template for engine {engine!r}")


def template_values(settings: Settings, engine: str) -> dict[str, str]:
    checkpoint = settings.model_dir.resolve()
    return {
        "max_batch_size": str(settings.max_batch_size),
        "checkpoint_dir": str(checkpoint),
        "max_seq_len": "0",  # 0: the checkpoint's max_position_embeddings
        "torch_threads": str(settings.resolved_engine_threads),
        "matmul_dtype": settings.engine_matmul_dtype,
        # The Python backend stub runs models in this environment (it ignores PYTHONPATH).
        "execution_env": sys.prefix,
        # The checkout that rendered the repository: a model imports its code from here, whatever checkout the
        # environment's editable install points at.
        "repo_root": str(REPO_ROOT),
        "kv_block_size": str(DEFAULT_BLOCK_SIZE),
        "kv_cache_bytes": str(settings.kv_cache_mb * 1024 * 1024),
        "enable_kv_cache_reuse": "true",
        "max_num_tokens": "512",
        # TensorRT-LLM only
        "engine_dir": str(settings.run_dir / "trtllm_engine"),
        "kv_cache_free_gpu_mem_fraction": "0.9",
        "batch_scheduler_policy": "max_utilization",
        # Cap on the paged KV pool: every batch slot at pipelines.trtllm_engine's default --max-seq-len (2048).
        "max_tokens_in_paged_kv_cache": str(settings.max_batch_size * 2048),
        "cancellation_check_period_ms": "100",
    }


def render_repository(settings: Settings, *, engine: str = "cpu", out_dir: str | Path | None = None,
                      template_root: Path = TEMPLATE_ROOT) -> Path:
    """Writes <out>/<model>/config.pbtxt (+ 1/model.py for Python-backend models); returns <out>."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    out = Path(out_dir) if out_dir else settings.run_dir / "model_repository"
    if out.exists():
        shutil.rmtree(out)
    values = template_values(settings, engine)
    for model_dir in sorted(p for p in template_root.iterdir() if p.is_dir()):
        template = string.Template(_template_for(model_dir, engine).read_text())
        # The LLM slot is rendered once per deployment in the model catalog (sluice-small, sluice-large, ...).
        slots = llm_slots(settings) if model_dir.name == LLM_SLOT else {model_dir.name: None}
        for name, checkpoint in slots.items():
            slot_values = {**values, "llm_name": name}
            if checkpoint is not None:
                suffix = "" if name == LLM_SLOT else f"_{name}"
                slot_values |= {"checkpoint_dir": str(checkpoint.resolve()),
                                "engine_dir": str(settings.run_dir / f"trtllm_engine{suffix}")}
            config = template.substitute(slot_values)  # a missing value is a KeyError, never a silent blank
            target = out / name
            (target / "1").mkdir(parents=True)
            (target / "config.pbtxt").write_text(config)
            backend_file = model_dir / "1" / "model.py"
            if backend_file.exists() and 'backend: "python"' in config:
                shutil.copy2(backend_file, target / "1" / "model.py")
    return out
