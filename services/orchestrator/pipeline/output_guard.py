"""The output guard stage: generated text streams through the safety service's CheckOutput (bidirectional) as it is
produced. Each text delta is sent and answered by one decision whose text is what may be shown now (redacted, or
empty while a possible PII match is held back — the bounded look-back lives in the safety service); STOP ends the
answer with finish_reason "content_filter" (what was already sent stays sent). The final decision after the
half-close flushes the held-back tail. Non-text events (tool calls) pass through unchanged.

Fail closed: a failure before any text was released raises a 503 ApiError (the facade answers with an HTTP error);
after that, the same error becomes an SSE error frame. Fail open: the rest of the answer passes unmoderated and the
stage is reported degraded."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from sluice.v1 import safety_pb2, safety_pb2_grpc

from services.common.telemetry import outgoing_metadata
from services.orchestrator.generate import Finished, TextDelta, Usage
from services.orchestrator.pipeline.input_guard import policy_id_for
from services.orchestrator.pipeline.stages import Stage, StageDown

log = logging.getLogger(__name__)

CONTENT_FILTER = "content_filter"


class _Exchange:
    """One CheckOutput stream, used in lock step: write a chunk, read its decision."""

    def __init__(self, stub: safety_pb2_grpc.SafetyStub, stage: Stage, tenant: str, request_id: str) -> None:
        self.stage = stage
        self.call = stub.CheckOutput(metadata=outgoing_metadata())  # traceparent: the output_guard span
        self.first = True
        self.tenant = tenant
        self.request_id = request_id

    async def _read(self) -> safety_pb2.OutputDecision:
        decision = await self.call.read()
        if decision is grpc.aio.EOF:
            raise StageDown(self.stage.name, "the safety service ended the stream early")
        return decision

    async def send(self, text: str) -> safety_pb2.OutputDecision:
        chunk = safety_pb2.OutputChunk(text=text)
        if self.first:
            chunk.policy_id, chunk.request_id = policy_id_for(self.tenant), self.request_id
            self.first = False

        async def exchange() -> safety_pb2.OutputDecision:
            await self.call.write(chunk)
            return await self._read()

        return await self.stage.call(exchange)

    async def finish(self) -> safety_pb2.OutputDecision:
        async def flush() -> safety_pb2.OutputDecision:
            await self.call.done_writing()
            return await self._read()

        return await self.stage.call(flush)

    def cancel(self) -> None:
        self.call.cancel()


class OutputGuard:
    def __init__(self, stage: Stage, stub: safety_pb2_grpc.SafetyStub) -> None:
        self.stage = stage
        self.stub = stub

    async def guard(self, events: AsyncIterator[Any], *, tenant: str, request_id: str, prompt_tokens: Callable[[], int],
                    degraded: list[str], on_redact: Callable[[], None] | None = None) -> AsyncIterator[Any]:
        """Wraps a stream of TextDelta / Finished / other events. `prompt_tokens` gives the usage to report when
        the guard stops the answer before the generator finished; `on_redact` is called when output PII is found
        (the caller stops the response from being cached)."""
        exchange: _Exchange | None = None
        completion_tokens = 0  # all tokens generated so far (usage on STOP)
        unreported = 0         # token counts not yet attached to an emitted delta
        moderating = True

        def on_failure(down: StageDown) -> None:
            nonlocal moderating, exchange
            if exchange is not None:
                exchange.cancel()
                exchange = None
            if not self.stage.fail_open:
                raise self.stage.failed(down) from None
            log.warning("request %s: output guard down (%s); the rest of the answer is unmoderated", request_id,
                        down.reason)
            moderating = False
            if self.stage.name not in degraded:
                degraded.append(self.stage.name)

        def noted(decision: safety_pb2.OutputDecision) -> safety_pb2.OutputDecision:
            if decision.action == safety_pb2.ACTION_REDACT and on_redact is not None:
                on_redact()
            return decision

        def stopped_finish(usage: Usage | None = None) -> Finished:
            categories = [c.category for c in (decision.categories if decision else []) if c.triggered]
            log.info("request %s: output stopped by the safety service (%s)", request_id, ",".join(categories))
            return Finished(CONTENT_FILTER, usage or Usage(prompt_tokens(), completion_tokens), categories)

        decision: safety_pb2.OutputDecision | None = None
        # Opened before the first event, so the call is set up while the prompt is prefilled, not on the way of the
        # first text to the client.
        exchange = _Exchange(self.stub, self.stage, tenant, request_id)
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    completion_tokens += event.token_count
                    unreported += event.token_count
                    if not event.text:
                        continue
                    if not moderating:
                        yield TextDelta(event.text, unreported)
                        unreported = 0
                        continue
                    try:
                        if exchange is None:
                            exchange = _Exchange(self.stub, self.stage, tenant, request_id)
                        decision = noted(await exchange.send(event.text))
                    except StageDown as down:
                        on_failure(down)
                        yield TextDelta(event.text, unreported)
                        unreported = 0
                        continue
                    if decision.text:
                        yield TextDelta(decision.text, unreported)
                        unreported = 0
                    if decision.action == safety_pb2.ACTION_STOP:
                        yield stopped_finish()
                        return
                elif isinstance(event, Finished):
                    if exchange is not None and exchange.first:  # no text was moderated: nothing to flush
                        exchange.cancel()
                        exchange = None
                    if exchange is not None:
                        try:
                            decision = noted(await exchange.finish())
                        except StageDown as down:
                            on_failure(down)
                            decision = None
                        if decision is not None and decision.text:
                            yield TextDelta(decision.text, unreported)
                            unreported = 0
                        if decision is not None and decision.action == safety_pb2.ACTION_STOP:
                            yield stopped_finish(event.usage)
                            return
                    yield event
                    return
                else:
                    yield event
        finally:
            if exchange is not None:
                exchange.cancel()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
