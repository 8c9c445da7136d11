"""A pipeline stage at run time: its spec, its circuit breaker, and the one place where timeouts, failures and the
failure policy are applied to calls into the stage's service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from services.common.circuit_breaker import CircuitBreaker
from services.common.errors import ApiError, unavailable
from services.orchestrator.pipeline.config import FailurePolicy, StageSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DEGRADED_HEADER = "x-sluice-degraded"


class StageDown(Exception):
    """The stage's service failed, timed out, or its circuit is open (carries the seconds to retry after)."""

    def __init__(self, stage: str, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.retry_after = retry_after


# gRPC codes by which a stage's service refuses one request while itself healthy, and the HTTP status they become.
REQUEST_REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
                    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.NOT_FOUND: 404}


def refused_by_stage(stage: str, exc: grpc.aio.AioRpcError) -> ApiError:
    status = REQUEST_REFUSALS[exc.code()]
    if status == 404:  # something the request names does not exist (e.g. a collection): the stage says what
        return ApiError(404, exc.details() or "Not found.", "invalid_request_error", None, "not_found")
    if status == 429:
        return ApiError(429, f"Too many requests of your tenant are in the {stage.replace('_', ' ')} stage; retry "
                             "shortly.", "requests", None, "rate_limit_exceeded", retry_after=1.0)
    return ApiError(400, f"The {stage.replace('_', ' ')} stage refused the request: {exc.details()}",
                    "invalid_request_error", "messages", "request_too_large")


class Stage:
    def __init__(self, spec: StageSpec, clock: Callable[[], float] | None = None) -> None:
        self.spec = spec
        extra = {"clock": clock} if clock is not None else {}
        self.breaker = CircuitBreaker(failure_threshold=spec.breaker.failure_threshold,
                                      cool_down_s=spec.breaker.cool_down_s, **extra)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fail_open(self) -> bool:
        return self.spec.failure is FailurePolicy.FAIL_OPEN

    def _retry_after(self) -> float:
        return max(1.0, self.breaker.retry_after())

    def check_open(self) -> None:
        """Raises StageDown when the circuit is open (no call is made)."""
        if not self.breaker.allow():
            raise StageDown(self.name, "circuit open", self._retry_after())

    async def call(self, make: Callable[[], Awaitable[T]], *, large: bool = False) -> T:
        """Runs one call into the stage's service under its breaker and timeout. Raises StageDown on an open
        circuit, a timeout or an RPC failure; ApiError (400, 429) when the service refused this request itself;
        other exceptions (the caller's own bugs) pass through.

        Only faults of the service count against its circuit: a refusal of the request (too large, over its
        tenant's share) does not, nor does the timeout of a `large` request, which its own size may explain —
        so one tenant's hostile requests cannot open the circuit for every tenant."""
        self.check_open()
        try:
            result = await asyncio.wait_for(make(), self.spec.timeout_s)
        except TimeoutError:
            if large:
                self.breaker.record_neutral()
            else:
                self.breaker.record_failure()
            raise StageDown(self.name, f"timed out after {self.spec.timeout_s * 1000:.0f} ms",
                            self._retry_after()) from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() in REQUEST_REFUSALS:
                self.breaker.record_neutral()
                raise refused_by_stage(self.name, exc) from None
            self.breaker.record_failure()
            raise StageDown(self.name, f"{exc.code().name}: {exc.details()}", self._retry_after()) from None
        self.breaker.record_success()
        return result

    def failed(self, down: StageDown) -> ApiError:
        """The API error for a fail-closed stage that is down."""
        log.warning("stage %s is down (%s): failing closed", self.name, down.reason)
        return unavailable(f"The {self.name.replace('_', ' ')} stage is unavailable; the request was not processed. "
                           "Please retry.", retry_after=down.retry_after)

    def record_stream_failure(self) -> None:
        self.breaker.record_failure()

    def record_stream_success(self) -> None:
        self.breaker.record_success()


async def run_stage(stage: Stage, make: Callable[[], Awaitable[T]], degraded: list[str], *,
                    large: bool = False) -> T | None:
    """Applies the stage's failure policy: fail closed raises a 503 ApiError; fail open logs, records the stage in
    `degraded` (→ the x-sluice-degraded header) and returns None."""
    try:
        return await stage.call(make, large=large)
    except StageDown as down:
        if not stage.fail_open:
            raise stage.failed(down) from None
        log.warning("stage %s is down (%s): proceeding without it", stage.name, down.reason)
        if stage.name not in degraded:
            degraded.append(stage.name)
        return None
