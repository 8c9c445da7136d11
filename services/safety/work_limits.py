"""What one request, and one tenant, may cost the safety service: a bounded amount of text per check and a bounded
number of checks in flight per tenant. A hostile tenant then slows only itself; every other tenant's checks keep
their latency."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.common.settings import _env_int

# Characters one CheckInput may ask to classify. The orchestrator refuses prompts over any model's context window
# before they get here, so only a caller that skipped that check meets this.
DEFAULT_MAX_CHECK_CHARS = 262_144
# Checks one tenant may have in flight at once; more are refused with RESOURCE_EXHAUSTED (429 at the API).
DEFAULT_TENANT_CONCURRENCY = 16
# Rule detectors (regular expressions) over more text than this run in a worker thread, off the event loop.
OFF_LOOP_CHARS = 4096


class TenantBusy(Exception):
    """The tenant already has its share of checks in flight."""


class TenantGate:
    """Counts each tenant's checks in flight (one event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._in_flight: dict[str, int] = {}

    def in_flight(self, tenant: str) -> int:
        return self._in_flight.get(tenant, 0)

    @contextmanager
    def enter(self, tenant: str) -> Iterator[None]:
        """Raises TenantBusy when the tenant is at its limit."""
        if self._in_flight.get(tenant, 0) >= self.limit:
            raise TenantBusy(tenant)
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[tenant] - 1
            if left:
                self._in_flight[tenant] = left
            else:
                del self._in_flight[tenant]


def max_check_chars() -> int:
    return _env_int("SLUICE_SAFETY_MAX_CHECK_CHARS", DEFAULT_MAX_CHECK_CHARS)


def tenant_concurrency() -> int:
    return _env_int("SLUICE_SAFETY_TENANT_CONCURRENCY", DEFAULT_TENANT_CONCURRENCY)
