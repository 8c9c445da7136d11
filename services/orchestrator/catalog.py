"""The served models: public names and aliases → deployments (Triton LLM slots), from one catalog file.

A deployment is one Triton model serving one checkpoint; a public model routes to one or more deployments by weight
(canary releases) and may name another public model as its fallback.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.tokenizer import ChatTokenizer
from services.common.errors import model_not_found
from services.common.settings import REPO_ROOT, Settings
from services.orchestrator.personas import PersonaBook
from services.orchestrator.prefix_cache import SCOPES as PREFIX_CACHE_SCOPES


@dataclass(slots=True)
class Deployment:
    name: str
    triton_model: str
    checkpoint_dir: Path
    tokenizer: ChatTokenizer
    context_window: int
    cost_per_1k_tokens: float = 0.0
    priority: int = 0
    max_queue: int = 64  # requests in flight beyond which new ones go to the fallback
    prefix_cache: str = "tenant"  # "tenant": each tenant its own prefix-cache namespace; "shared": one for all

    def __post_init__(self) -> None:
        if self.prefix_cache not in PREFIX_CACHE_SCOPES:
            raise ValueError(f"deployment {self.name!r}: prefix_cache must be one of {PREFIX_CACHE_SCOPES}")

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint_dir: Path, triton_model: str = "tensorrt_llm",
                        **extra: Any) -> Deployment:
        config = json.loads((checkpoint_dir / "config.json").read_text())
        return cls(name=name, triton_model=triton_model, checkpoint_dir=checkpoint_dir,
                   tokenizer=ChatTokenizer.from_pretrained(checkpoint_dir),
                   context_window=int(config.get("max_position_embeddings", 2048)), **extra)


@dataclass(slots=True)
class ModelEntry:
    """A public model name as clients see it in /v1/models."""

    name: str
    targets: list[tuple[Deployment, int]]  # (deployment, canary weight)
    aliases: list[str] = field(default_factory=list)
    fallback: str | None = None
    system_prompt: str | None = None  # used when neither the request nor a persona gives one
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "sluice"

    def __post_init__(self) -> None:
        if not self.targets or any(weight < 0 for _, weight in self.targets) or not any(w for _, w in self.targets):
            raise ValueError(f"model {self.name!r} needs at least one deployment with a positive weight")

    @property
    def primary(self) -> Deployment:
        return max(self.targets, key=lambda target: target[1])[0]

    # The primary deployment's properties, for callers that do not route.
    @property
    def tokenizer(self) -> ChatTokenizer:
        return self.primary.tokenizer

    @property
    def context_window(self) -> int:
        return self.primary.context_window

    @property
    def triton_model(self) -> str:
        return self.primary.triton_model

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint_dir: Path, triton_model: str = "tensorrt_llm") -> ModelEntry:
        deployment = Deployment.from_checkpoint(name, checkpoint_dir, triton_model)
        return cls(name=name, targets=[(deployment, 100)],
                   created=int((checkpoint_dir / "config.json").stat().st_mtime))

    def as_openai(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": self.owned_by}


class ModelCatalog:
    def __init__(self, entries: list[ModelEntry], personas: PersonaBook | None = None) -> None:
        self.personas = personas or PersonaBook()
        self._entries = {entry.name: entry for entry in entries}
        self._aliases = {alias: entry for entry in entries for alias in entry.aliases}

    def get(self, name: str) -> ModelEntry:
        entry = self._entries.get(name) or self._aliases.get(name)
        if entry is None:
            raise model_not_found(name)
        return entry

    def list(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def deployments(self) -> list[Deployment]:
        seen: dict[str, Deployment] = {}
        for entry in self._entries.values():
            for deployment, _ in entry.targets:
                seen.setdefault(deployment.name, deployment)
        return list(seen.values())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: Path = REPO_ROOT, checkpoint_override: Path | None = None,
                  primary_name: str | None = None) -> ModelCatalog:
        models = raw.get("models") or {}
        deployments: dict[str, Deployment] = {}
        specs = raw.get("deployments") or {}
        for name, checkpoint in deployment_checkpoints(raw, base, checkpoint_override, primary_name).items():
            spec = specs[name]
            deployments[name] = Deployment.from_checkpoint(
                name, checkpoint, spec.get("triton_model", "tensorrt_llm"),
                cost_per_1k_tokens=float(spec.get("cost_per_1k_tokens", 0.0)),
                priority=int(spec.get("priority", 0)), max_queue=int(spec.get("max_queue", 64)),
                prefix_cache=str(spec.get("prefix_cache", "tenant")))
        entries = []
        for name, spec in models.items():
            targets = [(deployments[d], int(w)) for d, w in (spec.get("deployments") or {}).items()
                       if d in deployments]
            if not targets:
                continue
            entries.append(ModelEntry(name=name, targets=targets, aliases=list(spec.get("aliases") or []),
                                      fallback=spec.get("fallback"), system_prompt=spec.get("system_prompt")))
        if not entries:
            raise ValueError("the model catalog serves no model (no deployment has its checkpoint)")
        return cls(entries, PersonaBook.from_dict(raw))


def deployment_checkpoints(raw: dict[str, Any], base: Path = REPO_ROOT, checkpoint_override: Path | None = None,
                           primary_name: str | None = None) -> dict[str, Path]:
    """Deployment name → checkpoint directory, for the deployments whose checkpoint exists (others are not served).
    `checkpoint_override` replaces the checkpoint of the main deployment of the model `primary_name`."""
    models = raw.get("models") or {}
    override_for = None
    if checkpoint_override is not None and primary_name in models:
        override_for = max((models[primary_name].get("deployments") or {}).items(), key=lambda kv: kv[1])[0]
    found = {}
    for name, spec in (raw.get("deployments") or {}).items():
        checkpoint = Path(checkpoint_override if name == override_for else base / spec["checkpoint"])
        if (checkpoint / "config.json").exists():
            found[name] = checkpoint
    return found


def llm_slots(settings: Settings) -> dict[str, Path]:
    """Triton LLM model name → checkpoint, for every served deployment (what the model repository must hold)."""
    slots = {"tensorrt_llm": settings.model_dir}  # the default model's slot, always rendered
    if settings.catalog_path.exists():
        raw = yaml.safe_load(settings.catalog_path.read_text()) or {}
        if settings.model_name in (raw.get("models") or {}):
            specs = raw.get("deployments") or {}
            checkpoints = deployment_checkpoints(raw, REPO_ROOT, settings.model_dir, settings.model_name)
            slots |= {specs[name].get("triton_model", "tensorrt_llm"): path for name, path in checkpoints.items()}
    return slots


def load_catalog(settings: Settings) -> ModelCatalog:
    """The catalog file when it lists the default model; otherwise just the default model's checkpoint."""
    if settings.catalog_path.exists():
        raw = yaml.safe_load(settings.catalog_path.read_text()) or {}
        if settings.model_name in (raw.get("models") or {}):
            return ModelCatalog.from_dict(raw, checkpoint_override=settings.model_dir,
                                          primary_name=settings.model_name)
    return ModelCatalog([ModelEntry.from_checkpoint(settings.model_name, settings.model_dir)])
