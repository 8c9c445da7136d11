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
    b.add_argument("--minutes", type=float, default=40.0)
    b.add_argument("--seed", type=int, default=1234)
    b.add_argument("--examples", type=int, default=300_000)
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--layers", type=int, default=6)
    b.add_argument("--ffn", type=int, default=704)
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--lr", type=float, default=3e-3)
    b.add_argument("--no-compile", action="store_true")
    b.add_argument("--skip-eval", action="store_true")
    e = sub.add_parser("evaluate", help="held-out skill accuracy of a built model")
    e.add_argument("--out", type=Path, default=Path("models/sluice-demo"))
    e.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    if a.cmd == "build":
        stats = train(TrainConfig(out=a.out, minutes=a.minutes, seed=a.seed, n_examples=a.examples,
                                  hidden_size=a.hidden, num_layers=a.layers, intermediate_size=a.ffn,
                                  batch_size=a.batch, lr=a.lr, compile=not a.no_compile))
        print(json.dumps({k: v for k, v in stats.items() if k != "loss_curve"}, indent=2))
        if a.skip_eval:
            return
    from pipelines.demo_model.evaluate import run_eval

    run_eval(a.out, n=getattr(a, "n", 100))


if __name__ == "__main__":
    main()
