"""Per-tenant safety policies: thresholds, actions, allow and deny lists, and what to do when checks fail.

Policies are looked up through `PolicyStore`: `InMemoryPolicyStore` serves built-in defaults and explicitly
registered policies; `policy_db.DbPolicyStore` reads the `safety_policies` table (one row per tenant). On disk and in
the database a policy is the mapping `policy_to_dict` writes; `policy_from_dict` validates one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from services.safety.categories import (
    ALL_CATEGORIES,
    CLASSIFIER_CATEGORIES,
    DENY_CATEGORY,
    INJECTION_CATEGORY,
    PII_CATEGORIES,
)

DEFAULT_POLICY_ID = "default"


class PolicyAction(StrEnum):
    BLOCK = "block"    # input: refuse; output: stop the stream
    REDACT = "redact"  # replace the spans (PII); categories without spans fall back to block
    FLAG = "flag"      # report the category, let the text through
    OFF = "off"        # do not report the category at all


class FailMode(StrEnum):
    CLOSED = "closed"  # classifier unavailable → the check fails (the orchestrator answers 503)
    FLAG = "flag"      # classifier unavailable → rules-only verdict marked `degraded`


# Thresholds chosen on the tuning half of tests/data/safety_eval.jsonl (see services/safety/evaluation.py).
DEFAULT_THRESHOLDS: dict[str, float] = {category: 0.5 for category in ALL_CATEGORIES}
DEFAULT_THRESHOLDS["toxicity"] = 0.8
# The Llama Guard categories only the learned head (v2) scores start in shadow mode: reported, not blocking, until a
# tenant opts in (`actions: {elections: block}`). On hand-written benign text the head flags ~6% (EVALUATION.md), too
# many to block by default; the categories the v1 detectors cover keep blocking.
V2_ONLY_CATEGORIES: frozenset[str] = frozenset({
    "sex_crimes", "defamation", "specialized_advice", "privacy", "intellectual_property", "elections",
    "code_interpreter_abuse"})
DEFAULT_ACTIONS: dict[str, PolicyAction] = {
    **{category: PolicyAction.FLAG if category in V2_ONLY_CATEGORIES else PolicyAction.BLOCK
       for category in CLASSIFIER_CATEGORIES},
    **{category: PolicyAction.REDACT for category in PII_CATEGORIES},
    INJECTION_CATEGORY: PolicyAction.BLOCK,
    DENY_CATEGORY: PolicyAction.BLOCK,
}


class PolicyError(ValueError):
    pass


class PolicyUnavailable(RuntimeError):
    """A tenant's policy cannot be read (database down, a corrupt row): the check fails closed."""


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    id: str = DEFAULT_POLICY_ID
    thresholds: Mapping[str, float] = field(default_factory=dict)  # overrides of DEFAULT_THRESHOLDS
    actions: Mapping[str, PolicyAction | str] = field(default_factory=dict)  # overrides of DEFAULT_ACTIONS
    allow_list: tuple[str, ...] = ()  # regexes: matching PII values are kept; matching text is not classified
    deny_list: tuple[str, ...] = ()   # regexes: any match triggers the deny_list category
    fail_mode: FailMode = FailMode.CLOSED
    _allow: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _deny: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for category, value in self.thresholds.items():
            if category not in ALL_CATEGORIES:
                raise PolicyError(f"policy {self.id!r}: unknown category {category!r}")
            if not 0.0 <= value <= 1.0:
                raise PolicyError(f"policy {self.id!r}: threshold for {category!r} must be in [0, 1], got {value}")
        for category, action in self.actions.items():
            if category not in ALL_CATEGORIES:
                raise PolicyError(f"policy {self.id!r}: unknown category {category!r}")
            try:
                PolicyAction(action)
            except ValueError:
                raise PolicyError(f"policy {self.id!r}: unknown action {action!r} for {category!r}") from None
        object.__setattr__(self, "fail_mode", FailMode(self.fail_mode))
        object.__setattr__(self, "_allow", _union(self.allow_list, self.id))
        object.__setattr__(self, "_deny", _union(self.deny_list, self.id))

    def threshold(self, category: str) -> float:
        return self.thresholds.get(category, DEFAULT_THRESHOLDS.get(category, 0.5))

    def action(self, category: str) -> PolicyAction:
        return PolicyAction(self.actions.get(category, DEFAULT_ACTIONS.get(category, PolicyAction.BLOCK)))

    def allowed(self, value: str) -> bool:
        return self._allow is not None and self._allow.search(value) is not None

    def mask_allowed(self, text: str) -> str:
        """The text with allow-listed phrases blanked (same length), so the classifier does not score them."""
        if self._allow is None:
            return text
        return self._allow.sub(lambda m: " " * len(m.group(0)), text)

    def deny_spans(self, text: str) -> list[tuple[int, int]]:
        if self._deny is None:
            return []
        return [m.span() for m in self._deny.finditer(text) if m.end() > m.start()]


def _union(patterns: tuple[str, ...], policy_id: str) -> re.Pattern[str] | None:
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error as exc:
        raise PolicyError(f"policy {policy_id!r}: invalid allow/deny pattern: {exc}") from None


POLICY_FIELDS = ("thresholds", "actions", "allow_list", "deny_list", "fail_mode")


def policy_to_dict(policy: SafetyPolicy) -> dict[str, Any]:
    """The policy's own settings (overrides of the defaults), in the shape `policy_from_dict` reads."""
    return {"thresholds": dict(policy.thresholds),
            "actions": {k: str(PolicyAction(v)) for k, v in policy.actions.items()},
            "allow_list": list(policy.allow_list), "deny_list": list(policy.deny_list),
            "fail_mode": str(policy.fail_mode)}


def effective_settings(policy: SafetyPolicy) -> dict[str, Any]:
    """Every category's threshold and action as applied (defaults filled in), for display."""
    return {"thresholds": {c: policy.threshold(c) for c in ALL_CATEGORIES},
            "actions": {c: str(policy.action(c)) for c in ALL_CATEGORIES},
            "allow_list": list(policy.allow_list), "deny_list": list(policy.deny_list),
            "fail_mode": str(policy.fail_mode)}


def policy_from_dict(policy_id: str, data: object) -> SafetyPolicy:
    """Validates a policy mapping (from YAML or the database). Raises PolicyError naming what is wrong."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PolicyError(f"policy {policy_id!r}: expected a mapping of {', '.join(POLICY_FIELDS)}")
    unknown = sorted(set(data) - set(POLICY_FIELDS))
    if unknown:
        raise PolicyError(f"policy {policy_id!r}: unknown field(s) {', '.join(map(str, unknown))}; "
                          f"expected {', '.join(POLICY_FIELDS)}")
    thresholds = _mapping(policy_id, data, "thresholds")
    for category, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyError(f"policy {policy_id!r}: threshold for {category!r} must be a number, got {value!r}")
    # YAML 1.1 reads a bare `off` as false; that is what the author meant.
    actions = {k: ("off" if v is False else v) for k, v in _mapping(policy_id, data, "actions").items()}
    lists = {}
    for name in ("allow_list", "deny_list"):
        value = data.get(name) or []
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise PolicyError(f"policy {policy_id!r}: {name} must be a list of non-empty regular expressions")
        lists[name] = tuple(value)
    fail_mode = data.get("fail_mode", FailMode.CLOSED)
    try:
        fail_mode = FailMode(fail_mode)
    except ValueError:
        raise PolicyError(f"policy {policy_id!r}: fail_mode must be one of "
                          f"{', '.join(m.value for m in FailMode)}, got {fail_mode!r}") from None
    return SafetyPolicy(id=policy_id, thresholds={k: float(v) for k, v in thresholds.items()},
                        actions={k: str(v) for k, v in actions.items()}, fail_mode=fail_mode, **lists)


def _mapping(policy_id: str, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise PolicyError(f"policy {policy_id!r}: {name} must map category names to values")
    return value


class PolicyStore(Protocol):
    async def get(self, policy_id: str) -> SafetyPolicy:
        """The policy for `policy_id`; the default policy for an empty or unknown id. Raises PolicyUnavailable
        when it cannot be known."""
        ...

    async def close(self) -> None: ...


class InMemoryPolicyStore:
    def __init__(self, policies: Mapping[str, SafetyPolicy] | None = None,
                 default: SafetyPolicy | None = None) -> None:
        self.default = default or SafetyPolicy()
        self._policies = dict(policies or {})

    def put(self, policy: SafetyPolicy) -> None:
        self._policies[policy.id] = policy

    async def get(self, policy_id: str) -> SafetyPolicy:
        return self._policies.get(policy_id, self.default) if policy_id else self.default

    async def close(self) -> None:
        return None
