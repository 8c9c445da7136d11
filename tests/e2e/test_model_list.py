"""`/v1/models` is the key's menu: only the models its tier may use (aliases listed beside them); any other model is
not found — through Envoy with the openai SDK."""

from __future__ import annotations

import openai
import pytest

from services.common.settings import Settings

pytestmark = pytest.mark.stack


def client(stack: Settings, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=key, max_retries=0, timeout=30)


def test_a_free_key_sees_only_its_tier_models(stack: Settings, tenant_keys) -> None:
    free = client(stack, tenant_keys("models-free", "free"))
    ids = {model.id for model in free.models.list()}
    assert ids == {"sluice-small", "all-MiniLM-L6-v2"}
    with pytest.raises(openai.NotFoundError) as caught:
        free.models.retrieve("sluice-demo")
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        free.models.retrieve("sluice-large")  # an alias of a model the tier may not use
    assert free.models.retrieve("sluice-small").id == "sluice-small"


def test_an_enterprise_key_sees_every_model_and_its_aliases(stack: Settings, api_key: str) -> None:
    enterprise = client(stack, api_key)
    listed = {model.id: model for model in enterprise.models.list()}
    assert {"sluice-demo", "sluice", "sluice-large", "sluice-small", "all-MiniLM-L6-v2"} <= set(listed)
    assert listed["sluice-demo"].model_extra["aliases"] == ["sluice", "sluice-large"]
    alias = enterprise.models.retrieve("sluice")
    assert alias.id == "sluice" and alias.model_extra["alias_of"] == "sluice-demo"
