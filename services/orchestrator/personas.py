"""System prompts and personas: per-model and per-tenant defaults, overridable per request.

A persona is a named system prompt plus sampling defaults. Precedence for the system prompt: a system message in the
request, then the request's `persona`, then the tenant's default persona, then the model's default system prompt.
Sampling fields the client set explicitly always win over a persona's defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import invalid
from services.orchestrator.chat_request import ChatMessage, ChatRequest

SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    system_prompt: str
    sampling: dict[str, float | int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, raw: dict[str, Any]) -> Persona:
        if not isinstance(raw.get("system_prompt"), str):
            raise ValueError(f"persona {name!r} needs a system_prompt")
        unknown = set(raw) - {"system_prompt", *SAMPLING_FIELDS}
        if unknown:
            raise ValueError(f"persona {name!r} has unknown fields {sorted(unknown)}")
        return cls(name, raw["system_prompt"], {k: raw[k] for k in SAMPLING_FIELDS if k in raw})


@dataclass(frozen=True, slots=True)
class PersonaBook:
    personas: dict[str, Persona] = field(default_factory=dict)
    tenant_defaults: dict[str, str] = field(default_factory=dict)  # tenant → persona name

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PersonaBook:
        personas = {name: Persona.from_dict(name, spec) for name, spec in (raw.get("personas") or {}).items()}
        tenants = {tenant: spec["persona"] for tenant, spec in (raw.get("tenants") or {}).items()
                   if isinstance(spec, dict) and spec.get("persona")}
        missing = set(tenants.values()) - set(personas)
        if missing:
            raise ValueError(f"tenant defaults name unknown personas {sorted(missing)}")
        return cls(personas, tenants)

    def apply(self, request: ChatRequest, *, model_system_prompt: str | None, tenant: str | None) -> ChatRequest:
        name = request.persona or (self.tenant_defaults.get(tenant) if tenant else None)
        persona = None
        if name is not None:
            persona = self.personas.get(name)
            if persona is None:
                raise invalid(f"The persona `{name}` does not exist.", "persona", "unknown_persona")
        changes: dict[str, Any] = {}
        if persona is not None:
            explicit = set(request.explicit)
            if "max_completion_tokens" in explicit:
                explicit.add("max_tokens")
            changes |= {key: value for key, value in persona.sampling.items() if key not in explicit}
        has_system = any(m.role in ("system", "developer") for m in request.messages)
        system_prompt = persona.system_prompt if persona is not None else model_system_prompt
        if system_prompt and not has_system:
            changes["messages"] = [ChatMessage(role="system", content=system_prompt), *request.messages]
        return dataclasses.replace(request, **changes) if changes else request
