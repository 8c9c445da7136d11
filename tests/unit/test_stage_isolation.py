"""A stage's circuit breaker counts faults of its service, never one request's own refusal or the timeout its own
size explains; the safety service's per-tenant gate bounds each tenant's checks in flight."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.circuit_breaker import BreakerState
from services.common.errors import ApiError
from services.orchestrator.pipeline.config import BreakerSpec, StageSpec
from services.orchestrator.pipeline.stages import Stage, StageDown
from services.safety.work_limits import TenantBusy, TenantGate


def stage(threshold: int = 2, timeout_s: float = 0.05) -> Stage:
    return Stage(StageSpec("input_guard", "safety", "127.0.0.1:1", timeout_s,
                           breaker=BreakerSpec(failure_threshold=threshold, cool_down_s=60)))


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="refused")


def failing(error: BaseException):
    async def call():
        raise error
    return call


async def slow() -> None:
    await asyncio.sleep(1)


@pytest.mark.parametrize(("code", "status"), [(grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
                                              (grpc.StatusCode.INVALID_ARGUMENT, 400)])
def test_a_request_refused_by_the_service_is_its_own_error_and_never_opens_the_circuit(code, status) -> None:
    guard = stage()

    async def flood() -> list[int]:
        statuses = []
        for _ in range(10):
            try:
                await guard.call(failing(rpc_error(code)))
            except ApiError as error:
                statuses.append(error.status)
        return statuses

    assert asyncio.run(flood()) == [status] * 10
    assert guard.breaker.state is BreakerState.CLOSED


def test_timeouts_of_large_requests_do_not_open_the_circuit_but_small_ones_do() -> None:
    guard = stage(threshold=2)

    async def run(large: bool, times: int) -> None:
        for _ in range(times):
            with pytest.raises(StageDown):
                await guard.call(slow, large=large)

    asyncio.run(run(large=True, times=5))
    assert guard.breaker.state is BreakerState.CLOSED
    asyncio.run(run(large=False, times=2))  # the service is slow for an ordinary request: that is its fault
    assert guard.breaker.state is BreakerState.OPEN


def test_service_failures_still_open_the_circuit() -> None:
    guard = stage(threshold=2)

    async def run() -> None:
        for _ in range(2):
            with pytest.raises(StageDown):
                await guard.call(failing(rpc_error(grpc.StatusCode.UNAVAILABLE)))

    asyncio.run(run())
    assert guard.breaker.state is BreakerState.OPEN


def test_tenant_gate_bounds_each_tenant_separately() -> None:
    gate = TenantGate(limit=2)
    with gate.enter("hostile"), gate.enter("hostile"):
        with pytest.raises(TenantBusy), gate.enter("hostile"):
            pass
        with gate.enter("other"):  # another tenant is not affected
            assert gate.in_flight("other") == 1
        assert gate.in_flight("hostile") == 2
    assert gate.in_flight("hostile") == 0
