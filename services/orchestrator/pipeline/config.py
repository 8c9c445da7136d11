"""The declared chat pipeline (pipelines/stages.yaml): which stages run, in what order, against which gRPC target,
with what timeout, failure policy and circuit breaker. Loading validates everything up front, so a bad file stops the
orchestrator at start instead of failing requests later."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from engine.streaming import StreamInterval
from services.common.settings import Settings

STAGE_ORDER = ("input_guard", "retrieve", "generate", "output_guard")

# Settings keys a stage may name as its gRPC target, and how each resolves to host:port.
TARGETS: dict[str, Callable[[Settings], str]] = {
    "safety": lambda s: f"{s.host}:{s.safety_port}",
    "retrieval": lambda s: s.retrieval_url,
}
# The service each stage speaks to: a stage must name a target that serves its API.
STAGE_TARGETS = {"input_guard": {"safety"}, "retrieve": {"retrieval"}, "output_guard": {"safety"}}
STAGE_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    # start the generation while the guard runs and read it only once the guard allows the prompt (lifecycle.py)
    "input_guard": {"overlap_generation": bool},
    "retrieve": {"token_budget": int, "max_top_k": int, "screen_passages": bool},
    # characters released before the classifier's verdict on them (0: none), the window it classifies, and how both
    # grow with the answers being moderated ("8:2,32:4")
    "output_guard": {"release_ahead_chars": int, "window_chars": int, "load_tiers": str},
}
_ZERO_ALLOWED = {"release_ahead_chars"}
_STAGE_KEYS = {"stage", "target", "timeout_ms", "failure", "breaker", "options"}
_BREAKER_KEYS = {"failure_threshold", "cool_down_s"}


class StageConfigError(ValueError):
    pass


class FailurePolicy(StrEnum):
    FAIL_CLOSED = "fail_closed"  # 503 + Retry-After (mid-stream: an error frame)
    FAIL_OPEN = "fail_open"      # proceed without the stage, header x-sluice-degraded: <stage>


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    failure_threshold: int = 5
    cool_down_s: float = 10.0


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    target: str | None = None     # the settings key, e.g. "safety"
    address: str | None = None    # host:port resolved from Settings
    timeout_s: float = 1.0
    failure: FailurePolicy = FailurePolicy.FAIL_CLOSED
    breaker: BreakerSpec = field(default_factory=BreakerSpec)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    stages: tuple[StageSpec, ...]

    def get(self, name: str) -> StageSpec | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def default_config() -> PipelineConfig:
    """Generation only: what runs when no stage file exists."""
    return PipelineConfig((StageSpec("generate"),))


def load_pipeline_config(settings: Settings, path: Path | None = None) -> PipelineConfig:
    path = path or settings.stages_path
    if not path.exists():
        return default_config()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise StageConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_pipeline_config(raw, settings)
    except StageConfigError as exc:
        raise StageConfigError(f"{path}: {exc}") from None


def parse_pipeline_config(raw: Any, settings: Settings) -> PipelineConfig:
    if not isinstance(raw, dict) or set(raw) != {"chat"}:
        raise StageConfigError("expected one top-level key, `chat`, listing the chat pipeline's stages")
    entries = raw["chat"]
    if not isinstance(entries, list) or not entries:
        raise StageConfigError("`chat` must be a non-empty list of stages")
    stages = [_stage(entry, index, settings) for index, entry in enumerate(entries)]
    names = [s.name for s in stages]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise StageConfigError(f"stage {duplicate!r} is listed more than once")
    if "generate" not in names:
        raise StageConfigError("the `generate` stage is required")
    if names != sorted(names, key=STAGE_ORDER.index):
        raise StageConfigError(f"stages must run in the order {' → '.join(STAGE_ORDER)}; got {' → '.join(names)}")
    retrieve = next((s for s in stages if s.name == "retrieve"), None)
    if retrieve is not None and retrieve.options.get("screen_passages") and "input_guard" not in names:
        raise StageConfigError("retrieve: `screen_passages` uses the input guard, which is not listed")
    return PipelineConfig(tuple(stages))


def _stage(entry: Any, index: int, settings: Settings) -> StageSpec:
    where = f"stage #{index + 1}"
    if not isinstance(entry, dict):
        raise StageConfigError(f"{where}: expected a mapping")
    name = entry.get("stage")
    if name not in STAGE_ORDER:
        raise StageConfigError(f"{where}: unknown stage {name!r}; known stages: {', '.join(STAGE_ORDER)}")
    where = f"stage {name!r}"
    unknown = sorted(set(entry) - _STAGE_KEYS)
    if unknown:
        raise StageConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if name == "generate":
        extra = sorted(set(entry) - {"stage"})
        if extra:
            raise StageConfigError(f"{where}: takes no settings (it is configured by the model catalog); "
                                   f"got {', '.join(extra)}")
        return StageSpec("generate")
    target = entry.get("target")
    if target not in STAGE_TARGETS[name]:
        raise StageConfigError(f"{where}: target must be one of {sorted(STAGE_TARGETS[name])} (a settings key), "
                               f"got {target!r}")
    timeout_ms = entry.get("timeout_ms")
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int | float) or not 0 < timeout_ms <= 60_000:
        raise StageConfigError(f"{where}: timeout_ms must be a number in (0, 60000], got {timeout_ms!r}")
    try:
        failure = FailurePolicy(entry.get("failure"))
    except ValueError:
        raise StageConfigError(f"{where}: failure must be fail_closed or fail_open, "
                               f"got {entry.get('failure')!r}") from None
    return StageSpec(name, target, TARGETS[target](settings), timeout_ms / 1000, failure,
                     _breaker(entry.get("breaker"), where), _options(name, entry.get("options"), where))


def _breaker(raw: Any, where: str) -> BreakerSpec:
    if raw is None:
        return BreakerSpec()
    if not isinstance(raw, dict) or set(raw) - _BREAKER_KEYS:
        raise StageConfigError(f"{where}: breaker takes {sorted(_BREAKER_KEYS)}, got {raw!r}")
    threshold = raw.get("failure_threshold", BreakerSpec.failure_threshold)
    cool_down = raw.get("cool_down_s", BreakerSpec.cool_down_s)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise StageConfigError(f"{where}: breaker.failure_threshold must be an integer ≥ 1, got {threshold!r}")
    if isinstance(cool_down, bool) or not isinstance(cool_down, int | float) or cool_down < 0:
        raise StageConfigError(f"{where}: breaker.cool_down_s must be a number ≥ 0, got {cool_down!r}")
    return BreakerSpec(threshold, float(cool_down))


def _options(name: str, raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    allowed = STAGE_OPTIONS[name]
    if not isinstance(raw, dict):
        raise StageConfigError(f"{where}: options must be a mapping")
    for key, value in raw.items():
        if key not in allowed:
            raise StageConfigError(f"{where}: unknown option {key!r}; known: {sorted(allowed) or 'none'}")
        expected = allowed[key]
        least = 0 if key in _ZERO_ALLOWED else 1
        if (expected is int and (isinstance(value, bool) or not isinstance(value, int) or value < least)) or \
                not isinstance(value, expected):
            raise StageConfigError(f"{where}: option {key!r} must be a "
                                   f"{'positive integer' if least else 'non-negative integer'}"
                                   if expected is int else f"{where}: option {key!r} must be a {expected.__name__}")
        if key == "load_tiers":
            try:
                StreamInterval.parse(value)
            except ValueError as exc:
                raise StageConfigError(f"{where}: option 'load_tiers': {exc}") from None
    return dict(raw)
