"""Server-side tools: a safe calculator, current_time, and the timeout / concurrency / circuit-breaker guard."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from services.common.circuit_breaker import BreakerState, CircuitBreaker
from services.orchestrator.tools import builtin
from services.orchestrator.tools.builtin import ToolInputError, calculator, current_time, evaluate
from services.orchestrator.tools.registry import ServerTool, builtin_registry


@pytest.mark.parametrize(("expression", "result"), [
    ("17 * 23", "391"), ("12 + 30", "42"), ("5 - 9", "-4"), ("7 / 2", "3.5"), ("10 / 3", "3.3333"),
    ("2 ** 10", "1024"), ("2^3", "8"), ("-(3 + 4) * 2", "-14"), ("17 // 5", "3"), ("17 % 5", "2"),
    ("6 × 7", "42"), ("1.5 * 4", "6"), (" 1 + 1 ", "2"),
])
def test_calculator_computes(expression: str, result: str) -> None:
    assert calculator({"expression": expression}) == result


@pytest.mark.parametrize(("expression", "reason"), [
    ("__import__('os').system('true')", "unsupported"),
    ("x + 1", "unsupported element in the expression: Name"),
    ("(1).real", "Attribute"),
    ("abs(-1)", "Call"),
    ("[1, 2]", "List"),
    ("'a' * 3", "unsupported"),
    ("True + 1", "unsupported"),
    ("9 ** 9 ** 9", "exponent is too large"),
    ("2 ** 1000", "exponent is too large"),
    ("10 ** 99 * 10 ** 99", "too large"),
    ("1 / 0", "division by zero"),
    ("(-8) ** 0.5", "not a finite real number"),
    ("1 +", "cannot parse"),
    ("1" * 300, "longer than"),
])
def test_calculator_rejects_everything_but_bounded_arithmetic(expression: str, reason: str) -> None:
    with pytest.raises(ToolInputError, match=reason.replace("(", r"\(")):
        evaluate(expression)


def test_current_time_reads_the_clock_in_an_iana_zone() -> None:
    noon_utc = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert current_time({"timezone": "Asia/Tokyo"}, now=lambda: noon_utc) == "21:00"
    assert current_time({"timezone": "America/New_York"}, now=lambda: noon_utc) == "07:00"
    assert len(current_time({"timezone": "UTC"})) == 5


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", ""])
def test_current_time_rejects_unknown_zones(zone: str) -> None:
    with pytest.raises(ToolInputError, match="unknown IANA timezone"):
        current_time({"timezone": zone})


def test_builtin_registry_serves_both_tools() -> None:
    registry = builtin_registry()
    assert registry.names() == ["calculator", "current_time"]
    result = asyncio.run(registry.get("calculator").run({"expression": "17 * 23"}))
    assert (result.ok, result.output, result.as_message_content()) == (True, "391", "391")
    bad = asyncio.run(registry.get("calculator").run({"expression": "1 / 0"}))
    assert (bad.ok, bad.as_message_content()) == (False, "error: division by zero")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_breaker_state_transitions() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down_s=10.0, clock=clock)
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success resets the count: failures must be consecutive
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after() == 10.0
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the one trial call
    assert not breaker.allow()  # others wait for its outcome
    breaker.record_failure()  # the trial failed: open again, for a full cool-down
    assert breaker.state is BreakerState.OPEN and breaker.retry_after() == 10.0
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0 and breaker.allow()


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"cool_down_s": -1}, {"half_open_max_calls": 0}])
def test_circuit_breaker_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


def slow_tool(release: threading.Event, timeout_s: float = 0.05, max_concurrency: int = 8,
              breaker: CircuitBreaker | None = None) -> ServerTool:
    def wait(arguments: dict) -> str:
        release.wait(5)
        return "done"

    return ServerTool(builtin.CALCULATOR, wait, timeout_s=timeout_s, max_concurrency=max_concurrency,
                      breaker=breaker or CircuitBreaker(failure_threshold=2, cool_down_s=60))


def test_a_slow_tool_times_out_and_repeated_timeouts_open_its_circuit() -> None:
    release = threading.Event()
    tool = slow_tool(release)

    async def scenario() -> list:
        results = [await tool.run({}) for _ in range(3)]
        release.set()
        await asyncio.sleep(0.05)
        return results

    first, second, third = asyncio.run(scenario())
    assert "timed out after 0.05 s" in first.error and "timed out" in second.error
    assert tool.breaker.state is BreakerState.OPEN
    assert "circuit open" in third.error  # failed fast: the function was not called


def test_bad_input_does_not_count_against_the_circuit() -> None:
    tool = builtin_registry().get("calculator")
    for _ in range(10):
        assert not asyncio.run(tool.run({"expression": "x"})).ok
    assert tool.breaker.state is BreakerState.CLOSED


def test_a_crashing_tool_opens_its_circuit() -> None:
    def crash(arguments: dict) -> str:
        raise RuntimeError("boom")

    tool = ServerTool(builtin.CALCULATOR, crash, breaker=CircuitBreaker(failure_threshold=2))
    results = [asyncio.run(tool.run({})) for _ in range(3)]
    assert [r.error for r in results] == ["calculator failed", "calculator failed",
                                          "calculator is temporarily unavailable (circuit open)"]


def test_the_concurrency_limit_counts_threads_until_they_really_end() -> None:
    release = threading.Event()
    tool = slow_tool(release, timeout_s=5.0, max_concurrency=2)

    async def scenario() -> tuple:
        running = [asyncio.create_task(tool.run({})) for _ in range(2)]
        await asyncio.sleep(0.05)
        rejected = await tool.run({})
        release.set()
        done = await asyncio.gather(*running)
        after = await tool.run({})
        return rejected, done, after

    rejected, done, after = asyncio.run(scenario())
    assert "busy: 2 calls are already running" in rejected.error
    assert [r.output for r in done] == ["done", "done"] and after.output == "done"
    assert tool.breaker.state is BreakerState.CLOSED  # being busy is not a failure


def test_a_timed_out_call_keeps_its_slot_until_its_thread_ends() -> None:
    release = threading.Event()
    tool = slow_tool(release, timeout_s=0.02, max_concurrency=1)

    async def scenario() -> tuple:
        timed_out = await tool.run({})
        busy = await tool.run({})
        release.set()
        await asyncio.sleep(0.05)
        return timed_out, busy, await tool.run({})

    timed_out, busy, after = asyncio.run(scenario())
    assert "timed out" in timed_out.error and "busy" in busy.error and after.output == "done"
