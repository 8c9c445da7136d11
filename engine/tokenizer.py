"""Chat templating, tokenisation and incremental detokenisation for a Hugging Face-layout checkpoint.

Shared by the Triton pre/post-processing models and the orchestrator so that prompt rendering and token counts are
identical on every path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


class ChatTemplateError(ValueError):
    """The messages cannot be rendered with the model's chat template."""


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(slots=True)
class ChatTokenizer:
    tokenizer: Tokenizer
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    eos_token_id: int
    pad_token_id: int
    _compiled: Any = field(default=None, repr=False)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ChatTokenizer:
        path = Path(path)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config: dict[str, Any] = {}
        if (path / "tokenizer_config.json").exists():
            config = json.loads((path / "tokenizer_config.json").read_text())
        generation: dict[str, Any] = {}
        if (path / "generation_config.json").exists():
            generation = json.loads((path / "generation_config.json").read_text())

        def token_text(key: str) -> str | None:
            value = config.get(key)
            return value.get("content") if isinstance(value, dict) else value

        eos_token = token_text("eos_token")
        pad_token = token_text("pad_token")
        eos_id = generation.get("eos_token_id")
        if isinstance(eos_id, list):
            eos_id = eos_id[0]
        if eos_id is None and eos_token is not None:
            eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise ValueError(f"{path}: no eos token id in generation_config.json or tokenizer_config.json")
        pad_id = generation.get("pad_token_id")
        if pad_id is None and pad_token is not None:
            pad_id = tokenizer.token_to_id(pad_token)
        template = config.get("chat_template")
        if isinstance(template, list):  # HF allows a list of named templates
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(
            tokenizer=tokenizer,
            chat_template=template,
            bos_token=token_text("bos_token"),
            eos_token=eos_token,
            pad_token=pad_token,
            eos_token_id=int(eos_id),
            pad_token_id=int(pad_id if pad_id is not None else eos_id),
        )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def render(self, messages: Sequence[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            raise ChatTemplateError("this model has no chat template")
        try:
            if self._compiled is None:  # compile errors (syntax, unknown filter) are template errors too
                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                env.filters["tojson"] = _tojson
                env.globals["raise_exception"] = _raise_exception
                self._compiled = env.from_string(self.chat_template)
            return self._compiled.render(
                messages=list(messages), tools=tools, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "",
            )
        except TemplateError as exc:
            raise ChatTemplateError(str(exc)) from exc

    def encode(self, text: str) -> list[int]:
        # The template already wrote the special tokens (bos, role markers) as text.
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_chat(self, messages: Sequence[dict[str, Any]], *,
                    tools: list[dict[str, Any]] | None = None) -> list[int]:
        return self.encode(self.render(messages, tools=tools))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def detokenizer(self, keep_special: Sequence[str] = ()) -> IncrementalDetokenizer:
        """`keep_special`: special tokens to render as text (e.g. tool-call markers); all others are dropped."""
        keep = {self.tokenizer.token_to_id(token) for token in keep_special} - {None}
        if not keep:
            return IncrementalDetokenizer(self)
        drop = frozenset(i for i, token in self.tokenizer.get_added_tokens_decoder().items()
                         if token.special and i not in keep)
        return IncrementalDetokenizer(self, drop_ids=drop, skip_special_tokens=False)


@dataclass(slots=True)
class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas that are always whole UTF-8 characters.

    Decodes a short window (a few tokens of context before the unsent ones) so that tokenizers whose pieces depend
    on their neighbours (byte-level BPE, SentencePiece's leading spaces) produce the same text as a full decode; a
    window that ends inside a multi-byte character (U+FFFD at its end) is held back until the next token completes it.
    """

    chat: ChatTokenizer
    ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0
    drop_ids: frozenset[int] = frozenset()  # with skip_special_tokens=False: the special tokens still hidden
    skip_special_tokens: bool = True

    def push(self, new_ids: Sequence[int]) -> str:
        self.ids.extend(int(i) for i in new_ids if int(i) not in self.drop_ids)
        prefix_text = self.chat.decode(self.ids[self.prefix_offset:self.read_offset], self.skip_special_tokens)
        full_text = self.chat.decode(self.ids[self.prefix_offset:], self.skip_special_tokens)
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            delta = full_text[len(prefix_text):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of the stream (may carry a replacement character)."""
        prefix_text = self.chat.decode(self.ids[self.prefix_offset:self.read_offset], self.skip_special_tokens)
        full_text = self.chat.decode(self.ids[self.prefix_offset:], self.skip_special_tokens)
        self.prefix_offset = self.read_offset = len(self.ids)
        return full_text[len(prefix_text):]
