"""Guided decoding with llguidance: a grammar per request, a token mask per step.

The guide types are TensorRT-LLM's (`guided_decoding_guide_type`); what the CPU engine accepts for each:

- `json`: any JSON object (OpenAI's json_object mode); the guide text is ignored.
- `json_schema`: a JSON Schema (a JSON string), compiled by llguidance's JSON compiler (its `x-guidance` key sets the
  layout; without one: no free whitespace, ", " and ": " as separators).
- `regex`: a regular expression (Rust regex syntax, anchored at both ends).
- `ebnf_grammar`: llguidance's Lark-like grammar syntax (`start: ...`; it can embed a JSON schema with
  `%json{...}`, a regex with `/.../` and special tokens with `<|name|>`).

A guide is compiled once per (type, text) (an LRU of compiled matchers; each request gets a copy). A guide that does
not compile is the request's `GuideError`, raised at submit time, before the request reaches the engine thread.

Per step, the masks of the constrained rows are computed by llguidance's thread pool (it releases the GIL) while the
forward pass runs; `MaskFill.apply` waits for them and sets the logits of disallowed tokens to -inf. A batch whose
masks take less than INLINE_FILL_S (measured, per row) is filled on the engine thread instead: handing it to another
thread costs more than that on a busy machine.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from llguidance import LLExecutor, LLMatcher, LLTokenizer

# llguidance.torch is not imported: it runs torch.compile at import time (slow, and it fails in Triton's Python stub).

GUIDE_TYPES = ("json", "json_schema", "regex", "ebnf_grammar")
# The layout a schema without its own `x-guidance` is written in (the demo model learned JSON with these separators).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_GUIDE_CHARS = 200_000
INLINE_FILL_S = 100e-6  # a batch's masks expected to take less than this are filled on the caller's thread


class GuideError(ValueError):
    """A guide that cannot be used (unknown type, bad schema, regex or grammar): the request's INVALID_ARGUMENT."""


@dataclass(frozen=True, slots=True)
class Guide:
    type: str  # one of GUIDE_TYPES
    text: str = ""


def grammar_for(guide: Guide) -> str:
    """llguidance's grammar for a guide (not yet checked against a tokenizer)."""
    if guide.type not in GUIDE_TYPES:
        raise GuideError(f"unknown guided_decoding_guide_type {guide.type!r}; expected one of {', '.join(GUIDE_TYPES)}")
    if len(guide.text) > MAX_GUIDE_CHARS:
        raise GuideError(f"guided_decoding_guide is longer than {MAX_GUIDE_CHARS} characters")
    if guide.type == "json":
        return LLMatcher.grammar_from_json_schema({"type": "object", "x-guidance": JSON_LAYOUT})
    if guide.type == "json_schema":
        try:
            schema = json.loads(guide.text)
        except json.JSONDecodeError as exc:
            raise GuideError(f"json_schema guide is not JSON: {exc.msg} at character {exc.pos}") from None
        if not isinstance(schema, dict | bool):
            raise GuideError("json_schema guide must be a JSON object (a schema)")
        if isinstance(schema, dict) and "x-guidance" not in schema:
            schema = {**schema, "x-guidance": JSON_LAYOUT}
        try:
            return LLMatcher.grammar_from_json_schema(schema)
        except ValueError as exc:
            raise GuideError(f"invalid json_schema guide: {exc}") from None
    if not guide.text:
        raise GuideError(f"{guide.type} guide is empty")
    if guide.type == "regex":
        return LLMatcher.grammar_from_regex(guide.text)
    return LLMatcher.grammar_from_lark(guide.text)


class GuidedDecoding:
    """Compiles guides for one tokenizer and fills token masks for a batch of matchers."""

    def __init__(self, tokenizer: LLTokenizer, vocab_size: int, cache_size: int = 256, threads: int = 2) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size  # the model's (the logits' width; may exceed the tokenizer's)
        self._cache: OrderedDict[Guide, LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._executor = LLExecutor(num_threads=threads)
        self._filler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-guided")
        self.compiled = self.cache_hits = 0
        self._fill_s_per_row = 0.0  # moving average of the mask fill time per row

    @classmethod
    def from_checkpoint(cls, path: str | Path, vocab_size: int, eos_token_id: int | None = None,
                        **options: int) -> GuidedDecoding:
        """For a Hugging Face-layout checkpoint directory (its tokenizer.json)."""
        from engine.tokenizer import ChatTokenizer

        if eos_token_id is None:
            eos_token_id = ChatTokenizer.from_pretrained(path).eos_token_id
        text = (Path(path) / "tokenizer.json").read_text(encoding="utf-8")
        return cls(LLTokenizer(text, n_vocab=vocab_size, eos_token=eos_token_id), vocab_size, **options)

    def matcher(self, guide: Guide) -> LLMatcher:
        """A fresh matcher for the guide (thread-safe); GuideError when the guide does not compile."""
        with self._lock:
            compiled = self._cache.get(guide)
            if compiled is not None:
                self._cache.move_to_end(guide)
                self.cache_hits += 1
                return compiled.deep_copy()
        grammar = grammar_for(guide)
        compiled = LLMatcher(self.tokenizer, grammar, log_level=0)  # compiles with the GIL released
        if compiled.is_error():
            raise GuideError(f"invalid {guide.type} guide: {compiled.get_error()}")
        with self._lock:
            self.compiled += 1
            self._cache[guide] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled.deep_copy()

    def start_fill(self, matchers: list[LLMatcher]) -> MaskFill:
        """Starts computing the next-token masks of these matchers (row k of the result for matchers[k])."""
        words = (self.vocab_size + 31) // 32
        bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32)
        pairs = [(m, k) for k, m in enumerate(matchers)]

        def fill() -> None:
            # llguidance writes row k at data_ptr + 4 * words * k; the tensor stays referenced by the MaskFill
            start = time.perf_counter()
            self._executor.unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), words * 4, len(pairs))
            self._fill_s_per_row = 0.9 * self._fill_s_per_row + 0.1 * (time.perf_counter() - start) / len(pairs)

        if self._fill_s_per_row * len(pairs) < INLINE_FILL_S:
            done: Future = Future()
            fill()
            done.set_result(None)
            return MaskFill(bitmask, done)
        return MaskFill(bitmask, self._filler.submit(fill))

    def close(self) -> None:
        self._filler.shutdown(wait=False)


@dataclass(slots=True)
class MaskFill:
    bitmask: torch.Tensor  # [G, ceil(V / 32)] int32, bit j of word w: token 32 w + j allowed
    pending: Future

    def allowed(self, vocab_size: int) -> torch.Tensor:
        """Waits for the fill; [G, V] bool."""
        self.pending.result()
        bits = np.unpackbits(self.bitmask.numpy().view(np.uint8), axis=1, bitorder="little")[:, :vocab_size]
        return torch.from_numpy(bits).bool()

    def apply(self, logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """The logits with the disallowed tokens of row rows[k] at -inf, k being the matcher's index (a new tensor:
        the runner's logits are inference tensors)."""
        allowed = self.allowed(logits.shape[1])
        if len(rows) == logits.shape[0]:  # every sampled row is constrained (rows are distinct and in order)
            return logits.masked_fill(~allowed, float("-inf"))
        index = torch.tensor(rows, dtype=torch.long)
        return logits.index_put((index,), logits[index].masked_fill(~allowed, float("-inf")))
