"""Held-out evaluation of the skills the platform's prompts need (demo model v2), for any checkpoint.

Every prompt is built by ``served.py`` with ``split=1``: names from the held-out syllables, held-out question
phrasings, held-out open-question topics and tool names, and seeds unused in training. Each skill's check:

- rag_answer: the reply contains the expected value exactly (case-sensitive) and no tool markup.
- rag_not_found: the reply says it could not find the answer ("could not find"), names no value.
- open_question: ends within OPEN_MAX_TOKENS tokens, no tool markup, mentions the question's key noun.
- no_markup_without_tools: open questions, greetings and facts with no tools given: never any tool markup.
- tool_use: tools with held-out names; the right tool is called with exactly the request's arguments.
- tool_not_needed: tools given, the request needs none: the reply has no tool call.
- calculator: arithmetic (held-out phrasings) with the calculator among other tools: calculator called with the
  expression ``a op b``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.demo_model import served as S
from pipelines.demo_model.evaluate import DemoModel, parse_tool_call
from pipelines.demo_model.evaluate import evaluate as evaluate_v1

OPEN_MAX_TOKENS = 40
Item = tuple[list[dict[str, Any]], list[dict[str, Any]] | None, Callable[[str], bool]]
SKILLS = ["rag_answer", "rag_not_found", "open_question", "no_markup_without_tools", "tool_use", "tool_not_needed",
          "calculator"]


def _no_markup(reply: str) -> bool:
    return "<tool_call>" not in reply and "</tool_call>" not in reply


def _prompt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation up to (not including) the assistant turn to predict."""
    last = max(i for i, m in enumerate(messages) if m["role"] != "assistant")
    return messages[: last + 1]


def _rag_items(rng: random.Random, answerable: bool) -> Item:
    while True:
        skill, msgs, _ = S.gen_rag(rng, 1)
        if (skill == "rag_answer") == answerable:
            break
    expected = msgs[-1]["content"]
    if answerable:
        value = expected.rstrip(".")
        return _prompt(msgs), None, lambda r, v=value: v in r and _no_markup(r)
    return _prompt(msgs), None, lambda r: "could not find" in r.lower() and _no_markup(r)


def _key_noun(question: str) -> str:
    for topic in sorted(S.TOPICS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(topic)}\b", question, re.I):
            return topic
    return ""


def build_items(skill: str, n: int, seed: int = 20261204) -> list[Item]:
    rng = random.Random(f"{seed}-{skill}")
    items: list[Item] = []
    while len(items) < n:
        if skill in ("rag_answer", "rag_not_found"):
            items.append(_rag_items(rng, skill == "rag_answer"))
        elif skill == "open_question":
            topic = rng.choice(S.open_topics(1))
            q = rng.choice(S.OPEN_Q[1]).format(a=S.article(topic), t=topic)
            items.append(([{"role": "user", "content": q}], None,
                          lambda r, t=topic: _no_markup(r) and t.lower() in r.lower()))
        elif skill == "no_markup_without_tools":
            roll = rng.random()
            if roll < 0.5:
                topic = rng.choice(list(S.TOPICS))
                q = rng.choice(S.OPEN_Q[0] + S.OPEN_Q[1]).format(a=S.article(topic), t=topic)
            elif roll < 0.75:
                q = rng.choice(S.v1.GREET[1] + S.JOKE_Q[1])
            else:
                q = rng.choice(["What is 12 plus 30?", "Explain what a GPU is.", "Tell me a joke",
                                f"What is {rng.randint(10, 99)} times {rng.randint(2, 9)}?"])
            items.append(([{"role": "user", "content": q}], None, _no_markup))
        elif skill in ("tool_use", "tool_not_needed"):
            while True:
                got, msgs, tools = S.gen_tool_use(rng, 1)
                if got == skill:
                    break
            if skill == "tool_not_needed":
                items.append((_prompt(msgs), tools, lambda r: parse_tool_call(r) is None and _no_markup(r)))
            else:
                call = next(m for m in msgs if m.get("tool_calls"))["tool_calls"][0]["function"]
                want = (call["name"], json.loads(call["arguments"]))
                head = msgs[: msgs.index(next(m for m in msgs if m.get("tool_calls")))]
                items.append((head, tools, lambda r, w=want: (c := parse_tool_call(r)) is not None
                              and (c.get("name"), c.get("arguments")) == w))
        elif skill == "calculator":
            q, expr, _ = S.arithmetic_question(rng, 1)
            tools = S._toolbox(rng, 1, S.v1.CALC)
            items.append(([{"role": "user", "content": q}], tools,
                          lambda r, e=expr: (c := parse_tool_call(r)) is not None and c.get("name") == "calculator"
                          and str((c.get("arguments") or {}).get("expression", "")).replace(" ", "")
                          == e.replace(" ", "")))
        else:
            raise ValueError(f"unknown skill {skill!r}")
    return items


def evaluate(dm: DemoModel, n: int = 100, skills: list[str] | None = None) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for skill in skills or SKILLS:
        ok = ended = 0
        limit = OPEN_MAX_TOKENS if skill == "open_question" else 48
        for msgs, tools, check in build_items(skill, n):
            reply, fin = dm.chat(msgs, tools, max_new_tokens=limit)
            ended += fin
            ok += bool(fin and check(reply))
        results[skill] = {"accuracy": round(ok / n, 3), "ended_with_end_token": round(ended / n, 3), "n": n}
        print(f"{skill}: {results[skill]}", flush=True)
    return results


def compare(paths: dict[str, Path], n: int) -> dict[str, dict[str, dict[str, float]]]:
    """Old and new side by side: the v1 skills and the served-format skills, same held-out items for each."""
    out = {}
    for label, path in paths.items():
        dm = DemoModel.load(path)
        print(f"== {label}: {path}", flush=True)
        out[label] = evaluate_v1(dm, n) | evaluate(dm, n)
    return out


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    labels = list(results)
    skills = list(next(iter(results.values())))
    lines = [f"| skill | {' | '.join(labels)} |", "|---|" + "---|" * len(labels)]
    for skill in skills:
        lines.append(f"| {skill} | " + " | ".join(f"{results[lab][skill]['accuracy']:.0%}" for lab in labels) + " |")
    return "\n".join(lines)
