"""The served models: public name → Triton deployment, with the tokenizer and context window of its checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.tokenizer import ChatTokenizer
from services.common.errors import model_not_found


@dataclass(slots=True)
class ModelEntry:
    name: str
    triton_model: str
    checkpoint_dir: Path
    tokenizer: ChatTokenizer
    context_window: int
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "sluice"

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint_dir: Path, triton_model: str = "tensorrt_llm") -> ModelEntry:
        config = json.loads((checkpoint_dir / "config.json").read_text())
        created = int((checkpoint_dir / "config.json").stat().st_mtime)
        return cls(name=name, triton_model=triton_model, checkpoint_dir=checkpoint_dir,
                   tokenizer=ChatTokenizer.from_pretrained(checkpoint_dir),
                   context_window=int(config.get("max_position_embeddings", 2048)), created=created)

    def as_openai(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": self.owned_by}


class ModelCatalog:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self._entries = {entry.name: entry for entry in entries}

    def get(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise model_not_found(name)
        return entry

    def list(self) -> list[ModelEntry]:
        return list(self._entries.values())
