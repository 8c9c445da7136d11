"""Admission as the metering layer does it: tiers → priority with per-tenant fairness, OpenAI's headers, the 403,
and reconciliation of a reservation when the request ends."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import ApiError
from services.orchestrator.tenancy.keys import generate_key, key_id_of, matches
from services.orchestrator.tenancy.limits import InProcessLimiter
from services.orchestrator.tenancy.metering import Metering, _duration
from services.orchestrator.tenancy.principal import Principal
from services.orchestrator.tenancy.tiers import Limits, TierBook

TIERS = TierBook.load()


def principal(tenant: str, tier: str, key: str | None = None, **limits: int) -> Principal:
    chosen = TIERS.get(tier)
    return Principal(tenant, key or f"k-{tenant}", chosen, chosen.limits.override(Limits(**limits)))


def test_paid_tiers_come_first_and_busy_tenants_yield_within_a_tier() -> None:
    metering = Metering(InProcessLimiter())

    async def scenario():
        priorities = {}
        for tier in ("free", "plus", "enterprise"):
            meter = metering.begin(principal(f"{tier}-co", tier), endpoint="chat", request_id="r")
            priorities[tier] = await meter.admit("sluice-small", 10, 10)
        busy = [await metering.begin(principal("busy", "plus", key=f"b{i}"), endpoint="chat",
                                     request_id="r").admit("sluice-demo", 10, 10) for i in range(3)]
        quiet = await metering.begin(principal("quiet", "plus"), endpoint="chat", request_id="r").admit(
            "sluice-demo", 10, 10)
        return priorities, busy, quiet

    priorities, busy, quiet = asyncio.run(scenario())
    assert priorities["enterprise"] > priorities["plus"] > priorities["free"]
    assert busy == [1000, 999, 998]  # each request the tenant already has in flight lowers the next one
    assert quiet == 1000 > busy[-1]  # another tenant of the tier goes ahead of the busy one
    assert all(p < priorities["enterprise"] - 2 for p in busy)


def test_models_outside_the_tier_are_403_before_any_limit_is_charged() -> None:
    metering = Metering(InProcessLimiter())
    meter = metering.begin(principal("free-co", "free"), endpoint="chat", request_id="r")
    with pytest.raises(ApiError) as denied:
        asyncio.run(meter.admit("sluice-demo", 10, 10))
    assert denied.value.status == 403 and denied.value.code == "model_not_allowed"
    assert meter.rate_limit_headers == {}


def test_headers_report_the_tighter_scope_and_finish_refunds_unused_tokens() -> None:
    metering = Metering(InProcessLimiter())
    who = principal("acme", "plus", rpm=5, tpm=1000)

    async def scenario():
        meter = metering.begin(who, endpoint="chat", request_id="r")
        await meter.admit("sluice-demo", 100, 400)
        headers = meter.rate_limit_headers
        meter.account.prompt_tokens, meter.account.completion_tokens = 100, 50
        await meter.finish()
        after = await metering.begin(who, endpoint="chat", request_id="r2").headers()
        return headers, after

    headers, after = asyncio.run(scenario())
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-remaining-requests"] == "4"
    assert headers["x-ratelimit-limit-tokens"] == "1000" and headers["x-ratelimit-remaining-tokens"] == "500"
    assert int(after["x-ratelimit-remaining-tokens"]) >= 850  # charged 150 of the 500 reserved


def test_reset_durations_read_like_openais() -> None:
    assert (_duration(0.02), _duration(1.5), _duration(360)) == ("20ms", "1.5s", "6m0s")


def test_keys_are_salted_and_well_formed() -> None:
    first, second = generate_key(), generate_key()
    assert first.plaintext != second.plaintext and first.salt != second.salt
    assert key_id_of(first.plaintext) == first.id and first.prefix == "sk-sluice-" + first.id
    assert matches(first.plaintext, first.salt, first.secret_hash)
    assert not matches(second.plaintext, first.salt, first.secret_hash)
    assert key_id_of("sk-sluice-" + "a" * 47) is None and key_id_of("sk-other-" + "a" * 48) is None


def test_an_unreachable_limits_backend_fails_closed_with_503() -> None:
    from services.orchestrator.tenancy.redis_limits import RedisLimiter

    limiter = RedisLimiter("redis://127.0.0.1:1/0")  # nothing listens on port 1
    meter = Metering(limiter).begin(principal("acme", "plus"), endpoint="chat", request_id="r")

    async def scenario():
        try:
            await meter.admit("sluice-demo", 10, 10)
        finally:
            await limiter.close()

    with pytest.raises(ApiError) as refused:
        asyncio.run(scenario())
    assert refused.value.status == 503 and refused.value.retry_after == 1.0
