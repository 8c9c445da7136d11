"""CLI: ``python -m pipelines.safety_classifier build`` (corpus → train → thresholds on validation → weights)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.safety_classifier.train import TrainConfig, train
from services.safety.learned_head import HEAD_DIR


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.safety_classifier")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="generate the training set, train the head, write head.safetensors + head.json")
    b.add_argument("--out", type=Path, default=HEAD_DIR)
    b.add_argument("--seed", type=int, default=20)
    b.add_argument("--epochs", type=int, default=6)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--hidden", type=int, default=TrainConfig().hidden)
    b.add_argument("--benign-budget", type=float, default=TrainConfig().benign_budget)
    b.add_argument("--token-dropout", type=float, default=TrainConfig().token_dropout)
    b.add_argument("--dropout", type=float, default=TrainConfig().dropout)
    a = ap.parse_args()
    meta = train(TrainConfig(out=a.out, seed=a.seed, epochs=a.epochs, threads=a.threads, hidden=a.hidden,
                             hidden2=a.hidden, benign_budget=a.benign_budget,
                             token_dropout=a.token_dropout, dropout=a.dropout))
    print(json.dumps({k: meta[k] for k in ("thresholds", "validation", "training_data", "train_seconds")}, indent=1))


if __name__ == "__main__":
    main()
