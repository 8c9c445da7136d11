"""Train the demo model on the synthetic corpus with a wall-clock budget (loss on assistant tokens only)."""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from engine.model import Llama, ModelArgs, load_checkpoint, save_checkpoint
from pipelines.demo_model.corpus import Example, generate
from pipelines.demo_model.served import generate_v2
from pipelines.demo_model.tokenizer import BOS, END, PAD, render_chat, save_tokenizer, train_tokenizer

# Held-out items whose answer the prompt does not determine (a definition of a held-out topic): left out of the
# validation loss, which otherwise rises as the training topics are learnt and picks an early checkpoint.
UNPREDICTABLE = {"open_question"}
_ASSISTANT = re.compile(r"<\|assistant\|>\n(.*?<\|end\|>)", re.S)


@dataclass
class TrainConfig:
    out: Path
    minutes: float = 40.0
    seed: int = 1234
    n_examples: int = 300_000
    vocab_size: int = 1024
    seq_len: int = 256
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 150
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 704
    compile: bool = True
    threads: int = 2
    corpus: str = "v1"  # v1: corpus.py only; v2: served.py (the platform's prompt formats) + v1 replay
    init_from: Path | None = None  # continue from this checkpoint (and keep its tokenizer)
    eval_every_minutes: float = 5.0  # v2: held-out loss this often; the best checkpoint is the one kept
    validation_examples: int = 400


class ActiveClock:
    """Seconds of training, not of wall clock: a gap longer than ``max_gap`` between two ticks (the process was
    stopped with SIGSTOP while a benchmark ran, or the machine suspended) counts as ``max_gap``, so the time
    budget and the learning-rate schedule are not spent while the trainer does not run."""

    def __init__(self, max_gap: float = 30.0) -> None:
        self.max_gap = max_gap
        self.last = time.monotonic()
        self.elapsed = 0.0

    def tick(self) -> float:
        now = time.monotonic()
        self.elapsed += min(now - self.last, self.max_gap)
        self.last = now
        return self.elapsed


def encode_corpus(tok, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    out = []
    for text, enc in zip(texts, tok.encode_batch(texts), strict=True):
        spans = [m.span(1) for m in _ASSISTANT.finditer(text)]
        mask = [int(any(a <= s < b for a, b in spans)) for s, _ in enc.offsets]
        out.append((enc.ids, mask))
    return out


def pack(examples: list[tuple[list[int], list[int]]], row_len: int, rng: random.Random) -> torch.Tensor:
    """First-fit packing into rows of ``row_len`` tokens; returns [N, 2, row_len] (ids, loss mask)."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    rows: list[tuple[list[int], list[int]]] = []
    open_rows: list[int] = []
    for i in order:
        ids, mask = examples[i]
        if len(ids) > row_len:
            continue
        for r in open_rows:
            if len(rows[r][0]) + len(ids) <= row_len:
                rows[r][0].extend(ids)
                rows[r][1].extend(mask)
                break
        else:
            rows.append((list(ids), list(mask)))
            open_rows.append(len(rows) - 1)
            if len(open_rows) > 8:
                open_rows.pop(0)
    data = torch.zeros(len(rows), 2, row_len, dtype=torch.long)
    for r, (ids, mask) in enumerate(rows):
        data[r, 0, : len(ids)] = torch.tensor(ids)
        data[r, 1, : len(mask)] = torch.tensor(mask)
    return data


def _examples(cfg: TrainConfig, tok: Tokenizer | None, split: str, n: int, seed: int) -> list[Example]:
    if cfg.corpus == "v2":
        return generate_v2(seed, n, split, tokenizer=tok)
    return list(generate(seed, n, split))


def _new_model(cfg: TrainConfig, tok: Tokenizer) -> tuple[Llama, ModelArgs]:
    args = ModelArgs(vocab_size=tok.get_vocab_size(), hidden_size=cfg.hidden_size,
                     intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                     num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                     max_position_embeddings=max(cfg.seq_len * 4, 1024), rope_theta=10000.0,
                     tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=END, pad_token_id=PAD)
    model = Llama(args)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * args.num_hidden_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) \
                else 0.02
            torch.nn.init.normal_(p, 0.0, std)
    return model, args


def masked_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the assistant tokens of a [B, 2, S+1] batch (ids, loss mask)."""
    x, y, m = batch[:, 0, :-1], batch[:, 0, 1:], batch[:, 1, 1:].float()  # [B, S]
    logits = model(x)  # [B, S, V]
    loss_tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return (loss_tok * m.reshape(-1)).sum() / m.sum().clamp(min=1)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, rows: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total = 0.0
    for i in range(0, rows.shape[0], batch_size):
        total += float(masked_loss(model, rows[i: i + batch_size])) * rows[i: i + batch_size].shape[0]
    model.train()
    return total / max(rows.shape[0], 1)


def train(cfg: TrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    t0 = time.time()
    if cfg.init_from is not None:
        tok = Tokenizer.from_file(str(cfg.init_from / "tokenizer.json"))
        model, args = load_checkpoint(cfg.init_from)
        examples = _examples(cfg, tok, "train", cfg.n_examples, cfg.seed)
        texts = [render_chat(m, tools) for _, m, tools in examples]
    else:
        examples = _examples(cfg, None, "train", cfg.n_examples, cfg.seed)
        texts = [render_chat(m, tools) for _, m, tools in examples]
        tok = train_tokenizer(texts[:40_000], cfg.vocab_size)
        model, args = _new_model(cfg, tok)
    save_tokenizer(tok, cfg.out, args.max_position_embeddings)
    if cfg.init_from is not None:  # the same tokenizer file, byte for byte
        (cfg.out / "tokenizer.json").write_bytes((cfg.init_from / "tokenizer.json").read_bytes())
    data = pack(encode_corpus(tok, texts), cfg.seq_len + 1, rng)
    held = [e for e in _examples(cfg, tok, "heldout", cfg.validation_examples, cfg.seed + 7919)
            if e[0] not in UNPREDICTABLE]
    val = pack(encode_corpus(tok, [render_chat(m, tools) for _, m, tools in held]), cfg.seq_len + 1, rng)
    print(f"corpus: {len(texts)} conversations, {data.shape[0]} rows, {val.shape[0]} validation rows, "
          f"prep {time.time() - t0:.0f}s", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params:,}", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    fwd = torch.compile(model) if cfg.compile else model
    gen_cfg = {"bos_token_id": BOS, "eos_token_id": END, "pad_token_id": PAD, "do_sample": False,
               "max_new_tokens": 64}
    (cfg.out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")

    budget = cfg.minutes * 60
    clock = ActiveClock()
    step, tokens, seen_loss_tokens, log = 0, 0, 0, []
    perm, cursor, ema = torch.randperm(data.shape[0]), 0, None
    best, best_step, next_eval = float("inf"), 0, cfg.eval_every_minutes * 60
    if cfg.corpus == "v2":
        best = validation_loss(model, val, cfg.batch_size)
        print(f"validation loss before training {best:.4f}", flush=True)
        save_checkpoint(model, args, cfg.out)
    while True:
        elapsed = clock.tick()
        if elapsed >= budget:
            break
        if cursor + cfg.batch_size > len(perm):
            perm, cursor = torch.randperm(data.shape[0]), 0
        batch = data[perm[cursor: cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        frac = min(elapsed / budget, 1.0)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = masked_loss(fwd, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += batch.shape[0] * cfg.seq_len
        seen_loss_tokens += int(batch[:, 1, 1:].sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0 or step in (1, 10, 20):
            el = max(clock.tick(), 1e-6)
            log.append({"step": step, "minutes": round(el / 60, 2), "loss": round(ema, 4), "lr": lr})
            print(f"step {step} {el / 60:.1f}min loss {ema:.4f} lr {lr:.2e} tok/s {tokens / el:.0f}", flush=True)
        if cfg.corpus == "v2" and clock.tick() >= next_eval:
            next_eval += cfg.eval_every_minutes * 60
            v = validation_loss(model, val, cfg.batch_size)
            log.append({"step": step, "minutes": round(clock.tick() / 60, 2), "validation_loss": round(v, 4)})
            print(f"validation loss {v:.4f} at step {step} (best {best:.4f})", flush=True)
            if v < best:
                best, best_step = v, step
                save_checkpoint(model, args, cfg.out)
            save_checkpoint(model, args, cfg.out / "last")  # the latest weights too, whatever the held-out loss
        elif cfg.corpus != "v2" and step % 1000 == 0:
            save_checkpoint(model, args, cfg.out)
    seconds = clock.tick()
    if cfg.corpus == "v2":
        v = validation_loss(model, val, cfg.batch_size)
        print(f"final validation loss {v:.4f} (best {best:.4f} at step {best_step})", flush=True)
        log.append({"step": step, "minutes": round(seconds / 60, 2), "validation_loss": round(v, 4)})
        if v < best:
            best, best_step = v, step
            save_checkpoint(model, args, cfg.out)
        save_checkpoint(model, args, cfg.out / "last")
    else:
        save_checkpoint(model, args, cfg.out)
    stats = {"params": n_params, "train_seconds": round(seconds, 1), "steps": step, "tokens_seen": tokens,
             "assistant_tokens_seen": seen_loss_tokens, "tokens_per_second": round(tokens / seconds, 1),
             "final_loss": round(ema or 0.0, 4), "conversations": len(texts), "rows": int(data.shape[0]),
             "config": {k: str(v) for k, v in cfg.__dict__.items()}, "loss_curve": log}
    if cfg.corpus == "v2":
        stats |= {"best_validation_loss": round(best, 4), "best_step": best_step}
    (cfg.out / "train_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats
