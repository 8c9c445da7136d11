"""Personas and default system prompts: precedence and sampling defaults."""

from __future__ import annotations

import pytest

from services.common.errors import ApiError
from services.orchestrator.chat_request import parse_chat_request
from services.orchestrator.personas import PersonaBook

BOOK = PersonaBook.from_dict({
    "personas": {
        "concise": {"system_prompt": "Answer in one sentence.", "temperature": 0.2, "max_tokens": 64},
        "pirate": {"system_prompt": "Talk like a pirate."},
    },
    "tenants": {"acme": {"persona": "pirate"}},
})


def request(**body):
    return parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body})


def test_model_default_system_prompt_when_nothing_else() -> None:
    applied = BOOK.apply(request(), model_system_prompt="You are Sluice.", tenant=None)
    assert [(m.role, m.content) for m in applied.messages] == [("system", "You are Sluice."), ("user", "hi")]


def test_persona_sets_prompt_and_fills_only_unset_sampling_fields() -> None:
    applied = BOOK.apply(request(persona="concise", temperature=0.9), model_system_prompt="ignored", tenant=None)
    assert applied.messages[0].content == "Answer in one sentence."
    assert applied.temperature == 0.9  # the client's own value wins
    assert applied.max_tokens == 64  # the persona's default fills the gap
    explicit = BOOK.apply(request(persona="concise", max_completion_tokens=10), model_system_prompt=None, tenant=None)
    assert explicit.max_tokens == 10


def test_request_system_message_beats_every_default() -> None:
    body = {"messages": [{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]}
    applied = BOOK.apply(request(persona="pirate", **body), model_system_prompt="model", tenant="acme")
    assert [m.content for m in applied.messages] == ["Mine.", "hi"]


def test_tenant_default_persona_and_request_override() -> None:
    assert BOOK.apply(request(), model_system_prompt="model", tenant="acme").messages[0].content == \
        "Talk like a pirate."
    assert BOOK.apply(request(persona="concise"), model_system_prompt=None, tenant="acme").messages[0].content == \
        "Answer in one sentence."


def test_unknown_persona_is_a_400_and_bad_config_is_refused() -> None:
    with pytest.raises(ApiError) as info:
        BOOK.apply(request(persona="nope"), model_system_prompt=None, tenant=None)
    assert info.value.status == 400 and info.value.param == "persona"
    with pytest.raises(ValueError):
        PersonaBook.from_dict({"personas": {"x": {"system_prompt": "s", "colour": "red"}}})
    with pytest.raises(ValueError):
        PersonaBook.from_dict({"tenants": {"acme": {"persona": "ghost"}}})
