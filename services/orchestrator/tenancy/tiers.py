"""Service tiers (config/tiers.yaml): limits, allowed models and scheduling priority per tier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.settings import REPO_ROOT

TIERS_PATH = REPO_ROOT / "config" / "tiers.yaml"


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None

    def override(self, other: Limits) -> Limits:
        """`other`'s values where set, else ours."""
        return Limits(*(mine if theirs is None else theirs for mine, theirs in zip(
            (self.rpm, self.tpm, self.max_concurrent, self.tokens_per_day),
            (other.rpm, other.tpm, other.max_concurrent, other.tokens_per_day), strict=True)))


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    limits: Limits
    models: tuple[str, ...] = ("*",)
    priority: int = 0

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class TierBook:
    def __init__(self, tiers: dict[str, Tier], default: str) -> None:
        if default not in tiers:
            raise ValueError(f"default tier {default!r} is not defined")
        self.tiers = tiers
        self.default = default

    def get(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise ValueError(f"unknown tier {name!r} (known: {', '.join(self.tiers)})") from None

    @classmethod
    def load(cls, path: Path = TIERS_PATH) -> TierBook:
        raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        tiers = {}
        for name, spec in (raw.get("tiers") or {}).items():
            limits = Limits(**{field: _positive(name, field, spec.get(field))
                               for field in ("rpm", "tpm", "max_concurrent", "tokens_per_day")})
            tiers[name] = Tier(name, limits, tuple(spec.get("models") or ("*",)), int(spec.get("priority", 0)))
        return cls(tiers, raw.get("default_tier", "free"))


def _positive(tier: str, field: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"tier {tier!r}: {field} must be a positive integer, got {value!r}")
    return value
