"""A stream whose consumer stops taking messages is ended after the idle timeout; slow production never counts."""

from __future__ import annotations

import asyncio

import pytest

from services.common.settings import Settings
from services.orchestrator.stalled_streams import StalledStreamInterceptor, write_until_stalled

TIMEOUT_S = 0.2


class Source:
    """A servicer's generator: `count` messages, `gap_s` apart; records how it ended."""

    def __init__(self, count: int, gap_s: float = 0.0) -> None:
        self.count, self.gap_s = count, gap_s
        self.ended_by: str | None = None

    async def messages(self):
        try:
            for i in range(self.count):
                if i:
                    await asyncio.sleep(self.gap_s)
                yield i
            self.ended_by = "done"
        except (asyncio.CancelledError, GeneratorExit) as exc:
            self.ended_by = type(exc).__name__
            raise


class Context:
    """A gRPC servicer context whose write of message i takes write_s[i] seconds (a client not reading: forever)."""

    def __init__(self, write_s: dict[int, float]) -> None:
        self.write_s = write_s
        self.written: list[int] = []

    async def write(self, message: int) -> None:
        await asyncio.sleep(self.write_s.get(message, 0.0))
        self.written.append(message)


async def _serve(source: Source, context: Context) -> None:
    await write_until_stalled(source.messages(), context, TIMEOUT_S, "/test/Stream")  # type: ignore[arg-type]


def test_a_write_that_never_completes_ends_the_call_and_closes_the_servicer() -> None:
    async def scenario() -> None:
        source, context = Source(count=1000), Context({3: 3600.0})  # the client stops reading after 3 messages
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(_serve(source, context))
        assert loop.time() - started < TIMEOUT_S + 0.5
        assert context.written == [0, 1, 2]
        assert source.ended_by == "GeneratorExit"  # its clean-up ran in the call's task, before the call ended

    asyncio.run(scenario())


def test_slow_production_and_slow_but_moving_writes_are_not_a_stall() -> None:
    async def scenario() -> None:
        source = Source(count=4, gap_s=TIMEOUT_S * 2)  # the engine is slow: not the client's fault
        context = Context(dict.fromkeys(range(4), TIMEOUT_S * 0.6))  # every write takes a while, none too long
        await _serve(source, context)
        assert context.written == [0, 1, 2, 3]
        assert source.ended_by == "done"

    asyncio.run(scenario())


def test_a_client_that_goes_away_is_not_counted_as_stalled_and_the_servicer_is_closed() -> None:
    async def scenario() -> None:
        source, context = Source(count=1000), Context({2: 3600.0})
        task = asyncio.create_task(_serve(source, context))
        await asyncio.sleep(TIMEOUT_S / 4)
        task.cancel()  # what gRPC does when the client resets the stream
        with pytest.raises(asyncio.CancelledError):
            await task
        assert source.ended_by == "GeneratorExit"

    asyncio.run(scenario())


def test_settings_and_interceptor_refuse_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="stream_idle_timeout_s"):
        Settings(stream_idle_timeout_s=0)
    with pytest.raises(ValueError):
        StalledStreamInterceptor(0)
