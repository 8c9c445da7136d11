"""Peer: Hugging Face transformers `generate()` on the same checkpoint and prompts.

Runs in the benchmark's own virtualenv (`make bench-venv`), never imports Sluice, and prints one JSON object on its
last stdout line. Input: a JSON file {"prompts": [[ids]...], "output_len": N}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--sequential-requests", type=int, default=8, help="requests for batch size 1")
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.workload).read_text())
    prompts: list[list[int]] = spec["prompts"]
    output_len: int = spec["output_len"]
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).eval()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def generate(batch: list[list[int]]) -> tuple[int, float]:
        width = max(len(p) for p in batch)  # left padding: every row ends at the same position
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=output_len,
                             min_new_tokens=output_len, do_sample=False, pad_token_id=pad)
        elapsed = time.perf_counter() - start
        return (out.shape[1] - width) * len(batch), elapsed

    with torch.inference_mode():
        generate([prompts[0][:8]])  # warm-up
        results = {}
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            chosen = prompts[:args.sequential_requests] if bs == 1 else prompts
            tokens, elapsed = 0, 0.0
            for i in range(0, len(chosen), bs):
                n, t = generate(chosen[i:i + bs])
                tokens, elapsed = tokens + n, elapsed + t
            results[f"batch_{bs}"] = {"requests": len(chosen), "output_tokens": tokens, "wall_s": round(elapsed, 4),
                                      "output_tokens_per_s": round(tokens / elapsed, 2)}
    print(json.dumps({"peer": "hf_generate", "transformers": transformers.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "python": platform.python_version(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
