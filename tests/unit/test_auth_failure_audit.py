"""A flood of bad keys writes a bounded number of audit rows: the first few per key prefix per minute one by one,
the rest as one row with their count when the minute ends; past the prefix limit, one shared `other` row."""

from __future__ import annotations

import asyncio

from services.orchestrator.tenancy.audit import AuditEvent
from services.orchestrator.tenancy.auth_failures import AuthFailureAudit


class FakeAuditLog:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_020.0  # 20 s into a minute

    def __call__(self) -> float:
        return self.now


def test_a_bad_key_flood_is_counted_per_prefix_per_minute() -> None:
    log, clock = FakeAuditLog(), Clock()
    failures = AuthFailureAudit(log, individual=2, max_prefixes=3, clock=clock)  # type: ignore[arg-type]

    async def flood() -> None:
        for _ in range(1000):
            await failures.record(method="/m", reason="invalid key", key_prefix="sk-sluice-aaaa", request_id="r")
        for index in range(50):  # a new random prefix each time
            await failures.record(method="/m", reason="invalid key", key_prefix=f"sk-sluice-{index:04d}",
                                  request_id=None)
        clock.now += 60  # the next minute: the last one is written as aggregates
        await failures.record(method="/m", reason="missing key", key_prefix=None, request_id=None)

    asyncio.run(flood())
    counts = [(e.details["key_prefix"], e.details["count"], e.details.get("aggregated", False)) for e in log.events]
    assert len(log.events) <= (3 + 1) * (2 + 1) + 1  # 3 prefixes and `other`, each 2 rows + 1 aggregate
    assert sum(count for _, count, _ in counts) == 1000 + 50 + 1  # every failure is counted once
    assert ("sk-sluice-aaaa", 998, True) in counts
    other = [e for e in log.events if e.details.get("other_prefixes")]  # 47 new prefixes past the limit of 3
    assert [e.details["count"] for e in other] == [46]


def test_the_rest_of_a_minute_is_written_when_it_ends_without_another_failure() -> None:
    log, clock = FakeAuditLog(), Clock()
    failures = AuthFailureAudit(log, individual=1, clock=clock)  # type: ignore[arg-type]

    async def run() -> None:
        for _ in range(3):
            await failures.record(method="/m", reason="missing key", key_prefix=None, request_id=None)
        clock.now += 60
        await asyncio.sleep(0.05)  # the flush was scheduled for the end of the minute; the fake clock passed it
        await failures._flusher  # noqa: SLF001 - wait for the scheduled flush itself

    clock.now = 1_000_079.99  # 0.01 s before the minute ends, so the scheduled flush runs almost at once
    asyncio.run(run())
    assert [(e.details["count"], e.details.get("aggregated", False)) for e in log.events] == [(1, False), (2, True)]
