"""CLI: ``python -m pipelines.demo_model build --minutes 40 --out models/sluice-demo`` (or ``evaluate``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.demo_model.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.demo_model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="corpus -> tokenizer -> train -> evaluate")
    b.add_argument("--out", type=Path, default=Path("models/sluice-demo"))
    b.add_argument("--minutes", "--time-budget-minutes", dest="minutes", type=float, default=40.0,
                   help="wall-clock training budget")
    b.add_argument("--seed", type=int, default=1234)
    b.add_argument("--examples", type=int, default=300_000)
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--layers", type=int, default=6)
    b.add_argument("--ffn", type=int, default=704)
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--lr", type=float, default=3e-3)
    b.add_argument("--no-compile", action="store_true")
    b.add_argument("--corpus", choices=["v1", "v2"], default="v1",
                   help="v2: the platform's prompt formats (served.py) plus v1 replay")
    b.add_argument("--init-from", type=Path, default=None, help="continue from this checkpoint and its tokenizer "
                   "(built first with the v1 recipe for --base-minutes when it does not exist)")
    b.add_argument("--base-minutes", type=float, default=37.5, help="v1 base build budget (see --init-from)")
    b.add_argument("--seq-len", type=int, default=256)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--warmup", type=int, default=150)
    b.add_argument("--eval-every-minutes", type=float, default=5.0)
    b.add_argument("--skip-eval", action="store_true")
    e = sub.add_parser("evaluate", help="held-out skill accuracy of a built model")
    e.add_argument("--out", type=Path, default=Path("models/sluice-demo"))
    e.add_argument("--n", type=int, default=100)
    c = sub.add_parser("compare", help="held-out skills (v1 and served formats) of several models side by side")
    c.add_argument("models", nargs="+", help="LABEL=PATH, e.g. v1=models/sluice-demo-v1 v2=models/sluice-demo")
    c.add_argument("--n", type=int, default=100)
    c.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    if a.cmd == "compare":
        import torch

        from pipelines.demo_model.evaluate_served import compare, table

        torch.set_num_threads(1)
        results = compare({m.split("=", 1)[0]: Path(m.split("=", 1)[1]) for m in a.models}, a.n)
        print(table(results))
        if a.json is not None:
            a.json.write_text(json.dumps(results, indent=2) + "\n")
        return
    if a.cmd == "build":
        if a.init_from is not None and not (a.init_from / "model.safetensors").exists():
            print(f"building the base model into {a.init_from} (v1 recipe, {a.base_minutes} min)", flush=True)
            train(TrainConfig(out=a.init_from, minutes=a.base_minutes, seed=a.seed, compile=not a.no_compile))
        stats = train(TrainConfig(out=a.out, minutes=a.minutes, seed=a.seed, n_examples=a.examples,
                                  hidden_size=a.hidden, num_layers=a.layers, intermediate_size=a.ffn,
                                  batch_size=a.batch, lr=a.lr, compile=not a.no_compile, corpus=a.corpus,
                                  init_from=a.init_from, seq_len=a.seq_len, threads=a.threads,
                                  warmup_steps=a.warmup, eval_every_minutes=a.eval_every_minutes))
        print(json.dumps({k: v for k, v in stats.items() if k != "loss_curve"}, indent=2))
        if a.skip_eval:
            return
    from pipelines.demo_model.evaluate import run_eval

    run_eval(a.out, n=getattr(a, "n", 100))


if __name__ == "__main__":
    main()
