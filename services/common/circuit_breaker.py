"""A small circuit breaker: stop calling a dependency that keeps failing, and probe it again after a cool-down.

closed ──(failure_threshold consecutive failures)──▶ open ──(cool_down elapsed)──▶ half-open
half-open: up to `half_open_max_calls` trial calls; a success closes the circuit, a failure re-opens it.

The breaker does not call anything itself: callers ask `allow()` before a call and report `record_success()` or
`record_failure()` after it, so the same object guards a tool, a Triton deployment or a gRPC stage. The clock is
injectable so tests drive the state machine without sleeping. Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int = 5
    cool_down_s: float = 30.0
    half_open_max_calls: int = 1
    clock: Callable[[], float] = time.monotonic
    _state: BreakerState = field(default=BreakerState.CLOSED, init=False)
    _failures: int = field(default=0, init=False)
    _opened_at: float = field(default=0.0, init=False)
    _trials: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cool_down_s < 0:
            raise ValueError("cool_down_s must not be negative")
        if self.half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be at least 1")

    @property
    def state(self) -> BreakerState:
        """The current state; an open circuit whose cool-down has elapsed reads as half-open."""
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.cool_down_s:
            self._state = BreakerState.HALF_OPEN
            self._trials = 0
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an open circuit half-opens (0 when calls are allowed now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cool_down_s - self.clock())

    def allow(self) -> bool:
        """Whether a call may go ahead now. In half-open state each allowed call is one of the limited trials."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._trials < self.half_open_max_calls:
            self._trials += 1
            return True
        return False

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trials = 0

    def record_neutral(self) -> None:
        """The call ended for a reason of its own (too large, over its tenant's share): no verdict on the dependency.
        A half-open trial it used is handed back, so the next call can probe instead."""
        if self._state is BreakerState.HALF_OPEN and self._trials > 0:
            self._trials -= 1

    def record_failure(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self.clock()
            self._trials = 0
