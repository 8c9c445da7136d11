"""How many tokens a streamed response carries, by load.

Every streamed response costs the serving path a fixed amount of CPU whatever it carries (Triton's Python backend,
tritonserver, the orchestrator's read and write, Envoy: ~0.1-0.3 ms each on this machine kind). A lone stream goes
token by token; with many sequences running, responses carry a few tokens each. The first two tokens and the last
of a request always go out at once: time to first token is unchanged, and so is the time to the first whole word —
a client that shows whole words only (the output guard holds a word until it is complete, so a PII value is never
split) needs the second token to know the first word has ended.

A request may ask for whole words (Sluice's request parameter `sluice_stream_words`; the orchestrator does when its
output guard runs, since the guard releases text only up to the last whitespace anyway): then the waiting tokens go
out only once one of them holds whitespace, i.e. ends the word before it — at once when the stream goes token by
token or by two, or once half the load's interval is reached (a word is already ~2 tokens). The guarded client sees
every word at the same moment as before, and the serving path handles ~2.5 times fewer responses. A run of tokens
without whitespace (code, a URL, text in a script without spaces) still goes out every `WORD_HOLD_TOKENS` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True, slots=True)
class StreamInterval:
    tiers: tuple[tuple[int, int], ...]  # (running sequences above, tokens per response), largest threshold first

    @classmethod
    def parse(cls, spec: str) -> StreamInterval:
        """"8:2,32:4": above 8 running sequences one response per 2 tokens, above 32 one per 4. "" : always 1."""
        tiers = []
        for part in filter(None, (piece.strip() for piece in spec.split(","))):
            above, sep, interval = part.partition(":")
            try:
                tier = (int(above), int(interval))
            except ValueError:
                tier = (-1, 0)
            if not sep or tier[0] < 0 or tier[1] < 1:
                raise ValueError(f"stream interval tier {part!r}: want RUNNING_ABOVE:TOKENS with TOKENS >= 1")
            tiers.append(tier)
        return cls(tuple(sorted(tiers, reverse=True)))

    def at(self, running: int) -> int:
        """Tokens per response when `running` sequences are in the batch."""
        return next((interval for above, interval in self.tiers if running > above), 1)

    def due(self, tokens_generated: int, tokens_waiting: int, running: int, *, words: bool = False,
            word_ended: bool = False) -> bool:
        """Whether a stream's `tokens_waiting` unsent tokens go out now, `tokens_generated` made so far (those
        included), `running` sequences in the batch. `words`: the request streams whole words, and `word_ended`
        says whether one of the waiting tokens holds whitespace. The request's last token is always sent: not
        decided here."""
        already_sent = tokens_generated - tokens_waiting
        if already_sent < EAGER_TOKENS:
            return True
        interval = self.at(running)
        if not words:
            return tokens_waiting >= interval
        # a word is already ~2 tokens (2.5 with the demo model's 1,024-token vocabulary, ~1.3 with Llama's 32k):
        # whole-word responses take half the load's interval
        return (word_ended and tokens_waiting >= max(1, interval // 2)) or tokens_waiting >= max(WORD_HOLD_TOKENS,
                                                                                                    interval)


STREAM_WORDS_PARAMETER = "sluice_stream_words"  # the request parameter (bool) that asks for whole-word responses
EAGER_TOKENS = 2  # the first tokens of every stream go out one by one, whatever the load
WORD_HOLD_TOKENS = 8  # a whole-words stream sends a run of tokens without whitespace after this many


def word_breaks(tokenizer: Tokenizer, vocab_size: int) -> np.ndarray:
    """For each token id, whether its text holds whitespace when it follows other text. Decoded after a letter, not
    alone: a SentencePiece (Metaspace) tokenizer drops the leading space of a sequence's first token. Special and
    unused ids are False."""
    anchor = tokenizer.encode("a", add_special_tokens=False).ids[-1]
    prefix = len(tokenizer.decode([anchor]))
    known = min(vocab_size, tokenizer.get_vocab_size(with_added_tokens=True))
    texts = tokenizer.decode_batch([[anchor, token] for token in range(known)], skip_special_tokens=True)
    breaks = np.zeros(vocab_size, dtype=np.bool_)
    breaks[:known] = [any(ch.isspace() for ch in text[prefix:]) for text in texts]
    return breaks
