"""The limits backends, run against the same expectations: in-process, and Redis (the real server on this machine,
127.0.0.1:6379, or SLUICE_TEST_REDIS_URL). Time is passed in explicitly, so refills are exact."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from services.orchestrator.tenancy.limits import (
    LEASE_TTL_S,
    NEVER,
    Ask,
    Bucket,
    InProcessLimiter,
    Lease,
    Quota,
    Settlement,
)

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_800_000_000.0


def require_redis() -> None:
    """Skips the test, saying why, when the Redis server is not running."""
    import redis

    try:
        redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")


def _redis_limiter():
    from services.orchestrator.tenancy.redis_limits import RedisLimiter

    require_redis()
    return RedisLimiter(REDIS_URL, prefix=f"sluice-test:{uuid.uuid4().hex}:")


_LOOP = asyncio.new_event_loop()  # one loop for the module: a Redis connection pool belongs to the loop it ran on


def run(coro):
    return _LOOP.run_until_complete(coro)


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    made = InProcessLimiter() if request.param == "memory" else _redis_limiter()
    yield made
    run(made.close())


def test_bucket_admits_its_limit_then_refuses_with_the_refill_time(limiter) -> None:
    rpm = Bucket("k:rpm", 3, "requests per minute (key)")

    async def scenario():
        verdicts = [await limiter.admit(Ask(buckets=[(rpm, 1)]), T0) for _ in range(4)]
        later = await limiter.admit(Ask(buckets=[(rpm, 1)]), T0 + 20.0)  # 3 per 60 s: one back after 20 s
        return verdicts, later

    verdicts, later = run(scenario())
    assert [v.admitted for v in verdicts] == [True, True, True, False]
    assert verdicts[2].states["k:rpm"].remaining == pytest.approx(0.0)
    assert verdicts[3].refused_by.key == "k:rpm"
    assert verdicts[3].retry_after == pytest.approx(20.0)
    assert later.admitted


def test_admission_is_all_or_nothing(limiter) -> None:
    loose = Bucket("t:tpm", 1000, "tokens per minute (tenant)")
    tight = Bucket("k:tpm", 100, "tokens per minute (key)")

    async def scenario():
        refused = await limiter.admit(Ask(buckets=[(loose, 150), (tight, 150)]), T0)
        states = await limiter.peek([loose, tight], T0)
        return refused, states

    refused, states = run(scenario())
    assert not refused.admitted and refused.refused_by is tight
    assert refused.retry_after == NEVER  # 150 > the key's whole limit: no wait makes it fit
    assert states["t:tpm"].remaining == pytest.approx(1000)  # the tenant bucket was not charged


def test_token_reservation_is_reconciled_to_actual_use(limiter) -> None:
    tpm = Bucket("k:tpm", 600, "tokens per minute (key)")
    day = Quota("k:tpd:2027-01-15", 10_000, "tokens per day (key)", T0 + 3600)

    async def scenario():
        admitted = await limiter.admit(Ask(buckets=[(tpm, 500)], quotas=[(day, 500)]), T0)
        await limiter.settle(Settlement(refunds=[(tpm, 500 - 120), (day, 500 - 120)]), T0)  # used 120 of 500
        after = await limiter.peek([tpm], T0)
        quota_left = await limiter.admit(Ask(quotas=[(day, 10_000 - 120)]), T0)
        over = await limiter.admit(Ask(quotas=[(day, 1)]), T0)
        return admitted, after, quota_left, over

    admitted, after, quota_left, over = run(scenario())
    assert admitted.admitted and admitted.states["k:tpm"].remaining == pytest.approx(100)
    assert after["k:tpm"].remaining == pytest.approx(480)
    assert quota_left.admitted  # exactly the rest of the day's quota fits
    assert not over.admitted and over.refused_by is day
    assert over.retry_after == pytest.approx(3600)  # until the window resets


def test_a_refund_never_overfills_and_overuse_is_charged(limiter) -> None:
    tpm = Bucket("k:tpm", 100, "tokens per minute (key)")

    async def scenario():
        await limiter.admit(Ask(buckets=[(tpm, 10)]), T0)
        await limiter.settle(Settlement(refunds=[(tpm, 50)]), T0)
        full = await limiter.peek([tpm], T0)
        await limiter.settle(Settlement(refunds=[(tpm, -130)]), T0)  # used 130 more than reserved
        owed = await limiter.peek([tpm], T0)
        return full, owed

    full, owed = run(scenario())
    assert full["k:tpm"].remaining == pytest.approx(100)
    assert owed["k:tpm"].remaining == pytest.approx(-30)


def test_leases_limit_concurrency_and_are_released(limiter) -> None:
    slots = Lease("k:conc", 2, "concurrent requests (key)")

    async def scenario():
        first = await limiter.admit(Ask(leases=[slots], lease_id="a"), T0)
        second = await limiter.admit(Ask(leases=[slots], lease_id="b"), T0)
        third = await limiter.admit(Ask(leases=[slots], lease_id="c"), T0)
        await limiter.settle(Settlement(releases=[slots], lease_id="a"), T0)
        fourth = await limiter.admit(Ask(leases=[slots], lease_id="d"), T0)
        expired = await limiter.admit(Ask(leases=[slots], lease_id="e"), T0 + LEASE_TTL_S + 1)
        return first, second, third, fourth, expired

    first, second, third, fourth, expired = run(scenario())
    assert (first.admitted, second.admitted, third.admitted, fourth.admitted) == (True, True, False, True)
    assert second.holders["k:conc"] == 1 and third.refused_by is slots
    assert expired.admitted and expired.holders["k:conc"] == 0  # slots of a replica that died expire


def test_concurrent_admissions_from_two_replicas_never_exceed_the_limit() -> None:
    """Two RedisLimiter instances (two replicas) racing for one bucket: exactly `limit` are admitted."""
    first = _redis_limiter()
    from services.orchestrator.tenancy.redis_limits import RedisLimiter

    second = RedisLimiter(REDIS_URL, prefix=first._prefix)  # the same keys, another connection pool
    rpm = Bucket("k:rpm", 30, "requests per minute (key)")

    async def scenario():
        verdicts = await asyncio.gather(*(replica.admit(Ask(buckets=[(rpm, 1)]), T0)
                                          for _ in range(40) for replica in (first, second)))
        await first.close()
        await second.close()
        return verdicts

    verdicts = run(scenario())
    assert sum(v.admitted for v in verdicts) == 30
