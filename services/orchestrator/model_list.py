"""`/v1/models` as the calling key sees it: only the models its tier may use, each alias listed beside its model.
A model the key may not use is not found (404), as if it did not exist: the list is the key's menu."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.common.errors import model_not_found
from services.orchestrator.catalog import ModelCatalog, ModelEntry
from services.orchestrator.tenancy.principal import Principal


def _allowed(principal: Principal | None, model: str) -> bool:
    return principal is None or principal.tier.allows(model)  # no principal: an orchestrator without tenancy


def _cards(entry: ModelEntry) -> list[dict[str, Any]]:
    card = entry.as_openai()
    aliases = sorted(entry.aliases)
    return [{**card, "aliases": aliases}, *({**card, "id": alias, "alias_of": entry.name} for alias in aliases)]


def visible_models(catalog: ModelCatalog, principal: Principal | None,
                   extra: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The chat models (and `extra` cards, e.g. the embedding model) the key may use."""
    cards = [card for entry in catalog.list() if _allowed(principal, entry.name) for card in _cards(entry)]
    return cards + [card for card in extra if _allowed(principal, card["id"])]


def visible_model(catalog: ModelCatalog, principal: Principal | None, name: str,
                  extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One model's card by name or alias; raises 404 model_not_found for a model the key may not use."""
    for card in extra:
        if card["id"] == name and _allowed(principal, name):
            return card
    entry = catalog.get(name)
    if not _allowed(principal, entry.name):
        raise model_not_found(name)
    return next(card for card in _cards(entry) if card["id"] == name)
