"""Audit of failed authentications, bounded: a flood of bad keys must not grow the database without bound.

Per minute and per key prefix (a missing key and a key that is not Sluice's each count as one prefix), the first
`individual` failures are written as they happen (count 1: an operator sees an attack start at once); the rest of
that minute are written as one row with their count when the minute ends. Past `max_prefixes` distinct prefixes in
a minute, further prefixes share one `other` tally. So a minute adds at most
`(max_prefixes + 1) × (individual + 1)` rows, whatever the flood.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.orchestrator.tenancy import audit
from services.orchestrator.tenancy.audit import AuditEvent, AuditLog

log = logging.getLogger(__name__)

WINDOW_S = 60
OTHER = "other"


@dataclass(slots=True)
class _Tally:
    seen: int = 0  # failures this minute
    written: int = 0  # of those, written one by one
    method: str = ""
    reason: str = ""


class AuthFailureAudit:
    def __init__(self, audit_log: AuditLog | None, *, individual: int = 5, max_prefixes: int = 100,
                 clock: Callable[[], float] = time.time) -> None:
        self._audit = audit_log
        self.individual = individual
        self.max_prefixes = max_prefixes
        self._clock = clock
        self._window: int | None = None
        self._tallies: dict[str, _Tally] = {}
        self._flusher: asyncio.Task | None = None

    async def record(self, *, method: str, reason: str, key_prefix: str | None, request_id: str | None) -> None:
        if self._audit is None:
            return
        window = int(self._clock() // WINDOW_S)
        if window != self._window:
            await self.flush()
            self._window = window
        prefix = key_prefix or reason  # "missing key" / "invalid key" when there is no Sluice key id
        if prefix not in self._tallies and len(self._tallies) >= self.max_prefixes:
            prefix = OTHER
        tally = self._tallies.setdefault(prefix, _Tally())
        tally.seen += 1
        tally.method, tally.reason = method, reason
        if tally.written < self.individual:
            tally.written += 1
            await self._audit.record(AuditEvent(audit.AUTH_FAILED, "anonymous", None, request_id, details={
                "method": method, "reason": reason, "key_prefix": key_prefix, "count": 1}))
        elif self._flusher is None or self._flusher.done():
            delay = (window + 1) * WINDOW_S - self._clock()
            self._flusher = asyncio.create_task(self._flush_after(max(0.0, delay)))

    async def _flush_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.flush()

    async def flush(self) -> None:
        """Writes one row per prefix for the failures of the current minute not yet written."""
        tallies, self._tallies = self._tallies, {}
        if self._audit is None or self._window is None:
            return
        started = datetime.fromtimestamp(self._window * WINDOW_S, UTC).isoformat()
        for prefix, tally in tallies.items():
            rest = tally.seen - tally.written
            if rest > 0:
                await self._audit.record(AuditEvent(audit.AUTH_FAILED, "anonymous", None, None, details={
                    "method": tally.method, "reason": tally.reason,
                    "key_prefix": None if prefix == OTHER or prefix == tally.reason else prefix,
                    "count": rest, "aggregated": True, "minute": started, "other_prefixes": prefix == OTHER}))
