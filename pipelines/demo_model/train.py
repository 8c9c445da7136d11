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

from engine.model import Llama, ModelArgs, save_checkpoint
from pipelines.demo_model.corpus import generate
from pipelines.demo_model.tokenizer import BOS, END, PAD, render_chat, save_tokenizer, train_tokenizer

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


def train(cfg: TrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    t0 = time.time()
    examples = list(generate(cfg.seed, cfg.n_examples, "train"))
    texts = [render_chat(m, tools) for _, m, tools in examples]
    tok = train_tokenizer(texts[:40_000], cfg.vocab_size)
    save_tokenizer(tok, cfg.out, cfg.seq_len * 4)
    data = pack(encode_corpus(tok, texts), cfg.seq_len + 1, rng)
    print(f"corpus: {len(texts)} conversations, {data.shape[0]} rows, prep {time.time() - t0:.0f}s", flush=True)

    args = ModelArgs(vocab_size=tok.get_vocab_size(), hidden_size=cfg.hidden_size,
                     intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                     num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                     max_position_embeddings=cfg.seq_len * 4, rope_theta=10000.0, tie_word_embeddings=True,
                     bos_token_id=BOS, eos_token_id=END, pad_token_id=PAD)
    model = Llama(args)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * args.num_hidden_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) \
                else 0.02
            torch.nn.init.normal_(p, 0.0, std)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params:,}", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    fwd = torch.compile(model) if cfg.compile else model

    budget = cfg.minutes * 60
    start, step, tokens, seen_loss_tokens, log = time.time(), 0, 0, 0, []
    perm, cursor, ema = torch.randperm(data.shape[0]), 0, None
    while True:
        elapsed = time.time() - start
        if elapsed >= budget:
            break
        if cursor + cfg.batch_size > len(perm):
            perm, cursor = torch.randperm(data.shape[0]), 0
        batch = data[perm[cursor: cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        x, y, m = batch[:, 0, :-1], batch[:, 0, 1:], batch[:, 1, 1:].float()  # [B, S]
        frac = min(elapsed / budget, 1.0)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        logits = fwd(x)  # [B, S, V]
        loss_tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        loss = (loss_tok * m.reshape(-1)).sum() / m.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        seen_loss_tokens += int(m.sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0 or step in (1, 10, 20):
            el = time.time() - start
            log.append({"step": step, "minutes": round(el / 60, 2), "loss": round(ema, 4), "lr": lr})
            print(f"step {step} {el / 60:.1f}min loss {ema:.4f} lr {lr:.2e} tok/s {tokens / el:.0f}", flush=True)
        if step % 1000 == 0:
            save_checkpoint(model, args, cfg.out)
    seconds = time.time() - start
    save_checkpoint(model, args, cfg.out)
    (cfg.out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": BOS, "eos_token_id": END, "pad_token_id": PAD, "do_sample": False,
         "max_new_tokens": 64}, indent=2) + "\n")
    stats = {"params": n_params, "train_seconds": round(seconds, 1), "steps": step, "tokens_seen": tokens,
             "assistant_tokens_seen": seen_loss_tokens, "tokens_per_second": round(tokens / seconds, 1),
             "final_loss": round(ema or 0.0, 4), "conversations": len(texts), "rows": int(data.shape[0]),
             "config": {k: str(v) for k, v in cfg.__dict__.items()}, "loss_curve": log}
    (cfg.out / "train_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats
