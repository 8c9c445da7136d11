"""Who is calling: the authenticated key's tenant, tier and effective limits, available to handlers through a
context variable that the auth interceptor sets for the RPC."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from services.orchestrator.tenancy.tiers import Limits, Tier


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    key_id: str
    tier: Tier
    key_limits: Limits  # the tier's limits with the key's own overrides
    user_id: str | None = None
    store_prompt_text: bool = False  # the tenant opted in to prompt text in its audit events
    default_collections: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


current_principal: ContextVar[Principal | None] = ContextVar("sluice_principal", default=None)
