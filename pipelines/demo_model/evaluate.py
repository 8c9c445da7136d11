"""Held-out skill evaluation of the demo model: greedy decoding through engine/model.py with the KV cache."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from engine.model import Llama, load_checkpoint
from pipelines.demo_model import corpus as C
from pipelines.demo_model.tokenizer import END, render_chat

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


@dataclass
class DemoModel:
    model: Llama
    tok: Tokenizer
    template: str

    @classmethod
    def load(cls, path: str | Path) -> DemoModel:
        path = Path(path)
        model, _ = load_checkpoint(path)
        template = json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
        return cls(model, Tokenizer.from_file(str(path / "tokenizer.json")), template)

    @torch.inference_mode()
    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
             max_new_tokens: int = 48) -> tuple[str, bool]:
        """Greedy reply text (special tokens kept, without the final ``<|end|>``) and whether it ended."""
        prompt = render_chat(messages, tools, add_generation_prompt=True, template=self.template)
        ids = self.tok.encode(prompt).ids
        cache = self.model.new_cache(1, len(ids) + max_new_tokens)
        logits = self.model(torch.tensor([ids]), 0, cache)  # [1, S, V]
        out: list[int] = []
        pos = len(ids)
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            if nxt == END:
                return self.tok.decode(out, skip_special_tokens=False), True
            out.append(nxt)
            logits = self.model(torch.tensor([[nxt]]), pos, cache)
            pos += 1
        return self.tok.decode(out, skip_special_tokens=False), False


def parse_tool_call(reply: str) -> dict[str, Any] | None:
    m = _CALL.search(reply)
    if not m:
        return None
    try:
        call = json.loads(m.group(1))
    except json.JSONDecodeError:
        return None
    return call if isinstance(call, dict) else None


Item = tuple[list[dict[str, Any]], list[dict[str, Any]] | None, Callable[[str], bool]]
_TIME_Q = ["Could you check the time in {c}?", "Current time in {c}, please."]  # phrasings absent from training


def _exact(ans: str) -> Callable[[str], bool]:
    return lambda r: r.strip().rstrip(".") == ans


def build_items(skill: str, n: int, seed: int = 20261122) -> list[Item]:
    """``n`` held-out prompts for ``skill``: held-out phrasings/operands (split 1) and a seed unused in training."""
    rng = random.Random(f"{seed}-{skill}")
    items: list[Item] = []
    while len(items) < n:
        if skill == "greeting":
            if rng.random() < 0.5:
                q = rng.choice(C.GREET[1])
                items.append(([{"role": "user", "content": q}], None,
                              lambda r: any(w in r.lower() for w in ("hello", "hi", "hey"))))
            else:
                q, key = rng.choice(C.SMALL[1])
                items.append(([{"role": "user", "content": q}], None, lambda r, k=key: k.lower() in r.lower()))
        elif skill in ("facts", "facts_continent"):
            c, cap, cont = rng.choice(C.FACTS)
            tpl = C.CAPITAL_Q[1] if skill == "facts" else C.CONT_Q[1]
            key = cap if skill == "facts" else cont
            items.append(([{"role": "user", "content": rng.choice(tpl).format(c=c)}], None,
                          lambda r, k=key: k in r))
        elif skill == "arithmetic":
            _, msgs, _ = C.gen_arith(rng, 1)
            key = msgs[-1]["content"].split(" = ")[1]
            items.append((msgs[:-1], None, lambda r, k=key: f"= {k}" in r))
        elif skill in ("passage_qa", "passage_qa_novel"):
            _, msgs, _ = C.gen_passage(rng, 1, novel=skill.endswith("novel"))
            items.append((msgs[:-1], None, _exact(msgs[-1]["content"].rstrip("."))))
        elif skill == "memory":
            _, msgs, _ = C.gen_memory(rng, 1)
            key = msgs[-1]["content"].split(" is ")[-1].split(" in ")[-1].rstrip(".")
            items.append((msgs[:-1], None, lambda r, k=key: k in r))
        elif skill == "tool_call":
            if rng.random() < 0.6:
                a, b, op = rng.randint(2, 999), rng.randint(2, 99), rng.choice("*+-/")
                args = {"expression": f"{a} {op} {b}"}
                q, name = rng.choice(["What is {e}?", "Calculate {e}."]).format(e=args["expression"]), "calculator"
            else:
                city, tz = rng.choice(list(C.TZ.items()))
                q, name, args = rng.choice(_TIME_Q).format(c=city), "current_time", {"timezone": tz}
            tools = [C.CALC, C.TIME] if rng.random() < 0.5 else [C.TIME, C.CALC]
            items.append(([{"role": "user", "content": q}], tools,
                          lambda r, nm=name, ar=args: (c := parse_tool_call(r)) is not None
                          and c.get("name") == nm and c.get("arguments") == ar))
        elif skill == "tool_answer":
            a, b = rng.randint(2, 999), rng.randint(2, 99)
            expr = f"{a} * {b}"
            msgs = [{"role": "user", "content": f"What is {expr}?"},
                    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
                        "name": "calculator", "arguments": {"expression": expr}}}]},
                    {"role": "tool", "content": str(a * b)}]
            items.append((msgs, [C.CALC, C.TIME], lambda r, v=str(a * b): v in r and "<tool_call>" not in r))
        elif skill == "no_tool":
            c, cap, _ = rng.choice(C.FACTS)
            msgs = [{"role": "user", "content": rng.choice(C.CAPITAL_Q[1]).format(c=c)}]
            items.append((msgs, [C.CALC, C.TIME], lambda r, k=cap: k in r and "<tool_call>" not in r))
        else:
            raise ValueError(f"unknown skill {skill!r}")
    return items


SKILLS = ["greeting", "facts", "facts_continent", "arithmetic", "passage_qa", "passage_qa_novel", "memory",
          "tool_call", "tool_answer", "no_tool"]


def evaluate(dm: DemoModel, n: int = 100, skills: list[str] | None = None) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for skill in skills or SKILLS:
        ok = ended = 0
        for msgs, tools, check in build_items(skill, n):
            reply, fin = dm.chat(msgs, tools)
            ended += fin
            ok += bool(fin and check(reply))
        results[skill] = {"accuracy": round(ok / n, 3), "ended_with_end_token": round(ended / n, 3), "n": n}
        print(f"{skill}: {results[skill]}", flush=True)
    return results


def run_eval(path: Path, n: int = 100) -> dict[str, Any]:
    torch.set_num_threads(1)  # decode steps are tiny; one thread is faster than two contending ones
    from pipelines.demo_model.evaluate_served import evaluate as evaluate_served

    dm = DemoModel.load(path)
    results = evaluate(dm, n)
    served = evaluate_served(dm, n)  # the platform's prompt formats (served.py), held out
    print(f"{'skill':<24}{'accuracy':>10}{'ended':>8}")
    for k, v in (results | served).items():
        print(f"{k:<24}{v['accuracy']:>10.1%}{v['ended_with_end_token']:>8.0%}")
    stats_path = path / "train_stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name != "eval.json")
    report = {"heldout_accuracy": results, "served_format_heldout_accuracy": served,
              "train_minutes": round(stats.get("train_seconds", 0) / 60, 1),
              "tokens_seen": stats.get("tokens_seen"), "assistant_tokens_seen": stats.get("assistant_tokens_seen"),
              "tokens_per_second": stats.get("tokens_per_second"), "steps": stats.get("steps"),
              "final_loss": stats.get("final_loss"), "params": sum(p.numel() for p in dm.model.parameters()),
              "size_bytes": size, "eval": "greedy, held-out phrasings/operands/names, seed 20261122"}
    (path / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
