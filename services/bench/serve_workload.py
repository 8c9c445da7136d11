"""Workloads for `sluice bench serve`: sessions of chat turns with controlled prompt and output lengths.

A session is a list of turns sent one after another (the reply to a turn is part of the next turn's history); the
single-turn workloads have one-turn sessions. Lengths are in tokens of the served model's tokenizer: a user message
is built from benign words until it reaches its drawn length (within one word), and every request asks for exactly
its drawn output length (`min_tokens` = `max_tokens`), so what is measured is what was drawn.

- `random`: one turn per session, prompt and output lengths drawn from their distributions;
- `shared-prefix`: one shared system prompt of `system_len` tokens before every user message (prefix caching);
- `multi-turn`: `turns` turns per session, each adding a user message and the model's reply to the history.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.tokenizer import ChatTokenizer

WORKLOADS = ("random", "shared-prefix", "multi-turn")
# Plain words only: nothing the input guard could take for PII, an injection or abuse.
_WORD_LIST = """river stone cloud lamp field garden window bread apple music paper table morning evening quiet bright
green blue small large happy gentle travel picture letter market school forest mountain ocean summer winter autumn
spring coffee kitchen library bicycle train planet circle number simple story teacher village harbour meadow candle
pencil basket ladder orchard valley island breeze thunder rainbow"""
WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A token-length distribution: `N` (fixed), `LO:HI` (uniform, inclusive) or `normal:MEAN:STD` (clipped to
    [1, 2·MEAN])."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LengthDist:
        parts = text.split(":")
        try:
            if len(parts) == 1:
                dist = cls("fixed", int(parts[0]))
            elif len(parts) == 2:
                dist = cls("uniform", int(parts[0]), int(parts[1]))
            elif len(parts) == 3 and parts[0] == "normal":
                dist = cls("normal", float(parts[1]), float(parts[2]))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"a length is N, LO:HI or normal:MEAN:STD, got {text!r}") from None
        if dist.a < 1 or (dist.kind == "uniform" and dist.b < dist.a) or (dist.kind == "normal" and dist.b < 0):
            raise ValueError(f"invalid length distribution {text!r}")
        return dist

    @property
    def high(self) -> int:
        return int({"fixed": self.a, "uniform": self.b, "normal": 2 * self.a}[self.kind])

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, min(int(2 * self.a), round(rng.gauss(self.a, self.b))))

    def __str__(self) -> str:
        return {"fixed": f"{int(self.a)}", "uniform": f"{int(self.a)}:{int(self.b)}",
                "normal": f"normal:{self.a:g}:{self.b:g}"}[self.kind]


@dataclass(frozen=True, slots=True)
class Turn:
    user: str
    output_len: int


@dataclass(frozen=True, slots=True)
class Session:
    index: int
    system: str | None
    turns: tuple[Turn, ...]


def text_of_tokens(tokenizer: ChatTokenizer, tokens: int, rng: random.Random) -> str:
    """Benign words whose encoding is `tokens` long, or one word short of it."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words))) < tokens:
        words.append(rng.choice(WORDS))
    if len(words) > 1 and len(tokenizer.encode(" ".join(words))) > tokens:
        words.pop()
    return " ".join(words)


def build_sessions(kind: str, n: int, tokenizer: ChatTokenizer, *, prompt_len: LengthDist, output_len: LengthDist,
                   system_len: int = 256, turns: int = 4, seed: int = 0, context_window: int | None = None,
                   variant: str = "") -> list[Session]:
    """`n` sessions of the workload `kind`. `seed` draws the lengths, `seed` and `variant` the words: two variants
    of one seed are the same workload in different words, so neither warms the other's prefix cache. Raises
    ValueError when the longest possible conversation would not fit in `context_window` tokens."""
    if kind not in WORKLOADS:
        raise ValueError(f"unknown workload {kind!r} (one of {', '.join(WORKLOADS)})")
    rng, words = random.Random(seed), random.Random(f"{seed}/{variant}")
    n_turns = turns if kind == "multi-turn" else 1
    if n_turns < 1:
        raise ValueError("a session needs at least one turn")
    system = text_of_tokens(tokenizer, system_len, words) if kind == "shared-prefix" else None
    if context_window is not None:
        template_slack = 16 * (n_turns + 1)  # role markers and the generation prompt, generously
        longest = (system_len if system else 0) + n_turns * (prompt_len.high + output_len.high) + template_slack
        if longest > context_window:
            raise ValueError(f"the longest {kind} conversation needs ~{longest} tokens, more than the model's "
                             f"context window of {context_window}: shorten the prompts, outputs or turns")
    return [Session(i, system, tuple(Turn(text_of_tokens(tokenizer, prompt_len.sample(rng), words),
                                          output_len.sample(rng)) for _ in range(n_turns)))
            for i in range(n)]


def messages_for(session: Session, turn: int, replies: Sequence[str]) -> list[dict[str, str]]:
    """The chat history sent for `turn` of `session`: system prompt, earlier turns with their replies, new turn."""
    messages = [{"role": "system", "content": session.system}] if session.system else []
    for earlier, reply in zip(session.turns[:turn], replies, strict=True):
        messages += [{"role": "user", "content": earlier.user}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": session.turns[turn].user})
    return messages
