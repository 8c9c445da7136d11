"""Hugging Face Llama checkpoint -> TensorRT-LLM checkpoint -> TensorRT engine, ready for the tensorrtllm backend.

Follows TensorRT-LLM's documented two-step workflow: convert the weights with the Python API
(``LLaMAForCausalLM.from_hugging_face(...).save_checkpoint(...)``), then compile with the ``trtllm-build`` CLI.
Needs a CUDA machine with TensorRT-LLM installed (NVIDIA's TensorRT-LLM / Triton ``trtllm-python-py3`` container, or
``pip install tensorrt_llm`` there); without it the command says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from services.common.settings import Settings

NOT_INSTALLED = ("TensorRT-LLM is not installed: run this on a CUDA machine inside NVIDIA's Triton TensorRT-LLM "
                 "container (nvcr.io/nvidia/tritonserver:<version>-trtllm-python-py3) or after "
                 "`pip install tensorrt_llm` there")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json")
# Matches the CPU engine's KV block size, so the orchestrator's reused-blocks -> tokens conversion holds on both.
TOKENS_PER_BLOCK = 16


class BuildError(Exception):
    """A failure worth one line to the user (no traceback)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_out = Settings.from_env().run_dir / "trtllm_engine"
    ap = argparse.ArgumentParser(prog="python -m pipelines.trtllm_engine", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="Hugging Face Llama checkpoint folder")
    ap.add_argument("--out", type=Path, default=default_out,
                    help=f"engine folder (default: {default_out}, where the rendered config looks)")
    ap.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-input-len", type=int, default=1024)
    ap.add_argument("--max-seq-len", type=int, default=2048)
    return ap.parse_args(argv)


def check_checkpoint(checkpoint: Path) -> None:
    config = checkpoint / "config.json"
    if not config.is_file():
        raise BuildError(f"{checkpoint} is not a Hugging Face checkpoint (no config.json)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "llama":
        raise BuildError(f"{checkpoint} is a {model_type!r} checkpoint; this pipeline converts Llama only")


def convert(checkpoint: Path, trtllm_checkpoint: Path, dtype: str) -> None:
    from tensorrt_llm.models import LLaMAForCausalLM  # deferred: only present on CUDA machines

    model = LLaMAForCausalLM.from_hugging_face(str(checkpoint), dtype=dtype)
    model.save_checkpoint(str(trtllm_checkpoint), save_config=True)


def build_command(trtllm_checkpoint: Path, out: Path, args: argparse.Namespace) -> list[str]:
    exe = shutil.which("trtllm-build")
    if exe is None:
        raise BuildError("trtllm-build is not on PATH (it ships with the tensorrt_llm package)")
    return [
        exe,
        "--checkpoint_dir", str(trtllm_checkpoint),
        "--output_dir", str(out),
        "--gemm_plugin", "auto",
        "--max_batch_size", str(args.max_batch_size),
        "--max_input_len", str(args.max_input_len),
        "--max_seq_len", str(args.max_seq_len),
        # In-flight batching needs packed inputs and a paged KV cache; KV reuse and chunked context (both on in
        # config.trtllm.pbtxt.tmpl) need paged context FMHA.
        "--remove_input_padding", "enable",
        "--paged_kv_cache", "enable",
        "--use_paged_context_fmha", "enable",
        "--tokens_per_block", str(TOKENS_PER_BLOCK),
    ]


def copy_tokenizer(checkpoint: Path, out: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / name)
            copied.append(name)
    return copied


def render_hint(checkpoint: Path, out: Path, max_seq_len: int) -> str:
    env = f"SLUICE_MODEL_DIR={shlex.quote(str(checkpoint.resolve()))}"
    lines = []
    if out.name == "trtllm_engine":
        env = f"SLUICE_RUN_DIR={shlex.quote(str(out.resolve().parent))} {env}"
    else:
        lines.append(f"note: the rendered config reads the engine from $SLUICE_RUN_DIR/trtllm_engine; move {out} there")
    if max_seq_len != 2048:
        lines.append("note: max_tokens_in_paged_kv_cache in the rendered config assumes --max-seq-len 2048")
    lines.append(f"render the GPU model repository with:\n  {env} sluice repo render --engine trtllm")
    return "\n".join(lines)


def build(args: argparse.Namespace) -> Path:
    check_checkpoint(args.checkpoint)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trtllm_ckpt_", dir=out.parent) as tmp:
        trtllm_checkpoint = Path(tmp)
        print(f"converting {args.checkpoint} -> TensorRT-LLM checkpoint ({args.dtype})", flush=True)
        try:
            convert(args.checkpoint, trtllm_checkpoint, args.dtype)
        except Exception as exc:  # conversion errors come from deep inside tensorrt_llm/torch
            raise BuildError(f"checkpoint conversion failed: {type(exc).__name__}: {exc}") from exc
        cmd = build_command(trtllm_checkpoint, out, args)
        print("building:", shlex.join(cmd), flush=True)
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0:
            raise BuildError(f"trtllm-build failed with exit status {result.returncode} (its log is above)")
    copied = copy_tokenizer(args.checkpoint, out)
    print(f"engine written to {out} (tokenizer files: {', '.join(copied) or 'none found'})")
    print(render_hint(args.checkpoint, out, args.max_seq_len))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("tensorrt_llm") is None:
        print(f"error: {NOT_INSTALLED}", file=sys.stderr)
        return 2
    try:
        build(args)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
