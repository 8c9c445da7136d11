"""Server-side tools: each runs with a timeout, a concurrency limit and its own circuit breaker.

A failure never raises out of `ServerTool.run`: it becomes a `ToolResult` with `error` set, because the runner
feeds the outcome back to the model either way. Bad input (division by zero, an unknown timezone) is the model's
mistake and does not count against the breaker; timeouts and crashes do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.circuit_breaker import CircuitBreaker
from services.orchestrator.tools import builtin
from services.orchestrator.tools.retrieve_tool import RETRIEVE, RetrieveTool
from services.orchestrator.tools.spec import ToolSpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ToolResult:
    output: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_message_content(self) -> str:
        """What the model reads in the `tool` turn."""
        return self.output if self.output is not None else f"error: {self.error}"


@dataclass(slots=True)
class ServerTool:
    spec: ToolSpec
    function: Callable[[dict[str, Any]], str]  # blocking; runs in a worker thread
    timeout_s: float = 2.0
    max_concurrency: int = 8
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(failure_threshold=5, cool_down_s=30.0))
    _in_flight: int = field(default=0, init=False)

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """Arguments must already be valid against `spec.parameters` (the parser checks them)."""
        if self._in_flight >= self.max_concurrency:
            return ToolResult(error=f"{self.name} is busy: {self.max_concurrency} calls are already running")
        if not self.breaker.allow():
            return ToolResult(error=f"{self.name} is temporarily unavailable (circuit open)")
        # The slot is held until the worker thread really ends, even after a timeout, so the limit bounds threads.
        self._in_flight += 1
        future = asyncio.ensure_future(asyncio.to_thread(self.function, arguments))
        future.add_done_callback(self._release)
        try:
            output = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            self.breaker.record_failure()
            return ToolResult(error=f"{self.name} timed out after {self.timeout_s:g} s")
        except builtin.ToolInputError as exc:
            self.breaker.record_success()  # the tool works; the input was wrong
            return ToolResult(error=str(exc))
        except Exception as exc:
            log.warning("server tool %s failed: %s", self.name, type(exc).__name__)
            self.breaker.record_failure()
            return ToolResult(error=f"{self.name} failed")
        self.breaker.record_success()
        return ToolResult(output=output)

    def _release(self, future: asyncio.Future[str]) -> None:
        self._in_flight -= 1
        if not future.cancelled():
            future.exception()  # mark a late failure as retrieved


class ToolRegistry:
    def __init__(self, tools: list[ServerTool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def get(self, name: str) -> ServerTool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)


def builtin_registry(retrieval_address: str | None = None) -> ToolRegistry:
    """`retrieve` is registered only when a retrieval service address is given."""
    tools = [
        ServerTool(builtin.CALCULATOR, builtin.calculator, timeout_s=1.0, max_concurrency=16),
        ServerTool(builtin.CURRENT_TIME, builtin.current_time, timeout_s=1.0, max_concurrency=16),
    ]
    if retrieval_address:
        tools.append(ServerTool(RETRIEVE, RetrieveTool(retrieval_address, timeout_s=4.5), timeout_s=5.0,
                                max_concurrency=8))
    return ToolRegistry(tools)
