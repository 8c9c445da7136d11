"""A generation that starts while the input guard still runs, and is only read once the request is admitted.

The input guard is a round trip to the safety service and its classifier (~7 ms at c = 1 on the CPU stack), and the
engine's prefill does not need its verdict to begin: only the *release* of text does. So for a request the guard is
expected to pass unchanged, the Triton stream is opened first and its first chunk is awaited in a task of its own;
when the guard allows the prompt the generation continues from that chunk, and when it blocks or rewrites the
prompt (redaction) the generation is stopped the way a client disconnect stops it — TensorRT-LLM's `stop`
request, the engine's last tokens drained into the tally — and not one token of it reaches the client.

Whoever discards a head start owns what the engine produced for it: `Generator.discard_head_start` counts the
completion tokens into the request's usage, so usage records keep equal to the engine's output counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from services.common.telemetry import tracer
from services.orchestrator.triton_llm import LLMChunk, TokenTally

log = logging.getLogger(__name__)

_abandoned: set[asyncio.Task] = set()  # discards running in the background, kept referenced until they end


class HeadStart:
    """One Triton stream, opened now; `chunks()` reads it from its first chunk, `discard()` stops it unread."""

    def __init__(self, chunks: AsyncIterator[LLMChunk], tally: TokenTally) -> None:
        self.tally = tally  # every token the engine produced for this stream (drained ones included)
        self.started = time.monotonic()
        # The request's `generate` span starts with the engine call, so the call's span stays below it; whoever
        # reads the stream takes the span over (`take_span`), a discard ends it.
        self._span: Span | None = tracer().start_span("generate")
        self._chunks = chunks
        self._first: asyncio.Task[LLMChunk] = asyncio.create_task(self._read_first(self._span))
        self._taken = False

    async def _read_first(self, span: Span) -> LLMChunk:
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await anext(self._chunks)  # sends the request; StopAsyncIteration if the engine sent nothing
        finally:
            otel_context.detach(token)

    def take_span(self) -> Span | None:
        """The `generate` span this stream was started in, for the reader to continue and end (once)."""
        span, self._span = self._span, None
        return span

    async def chunks(self) -> AsyncIterator[LLMChunk]:
        """The stream from its first chunk. Closing it early stops the generation like closing the engine stream."""
        if self._taken:
            raise RuntimeError("a head start is read once")
        self._taken = True
        try:
            try:
                first = await self._first
            except StopAsyncIteration:
                return
            yield first
            async for chunk in self._chunks:
                yield chunk
        finally:
            await self._stop()

    async def discard(self) -> None:
        """Stops the generation without reading it (the guard refused or rewrote the prompt)."""
        self._taken = True
        await self._stop()
        if (span := self.take_span()) is not None:
            span.set_attributes({"sluice.discarded": True, "gen_ai.usage.output_tokens": self.tally.received})
            span.end()

    def abandon(self) -> None:
        """Stops the generation in the background, from code that cannot await (its tokens go unbilled)."""
        try:
            task = asyncio.get_running_loop().create_task(self.discard())
        except RuntimeError:  # no running loop (a synchronous caller in a test): nothing runs on one either
            return
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)

    async def _stop(self) -> None:
        if not self._first.done():
            self._first.cancel()  # the stream's own clean-up sends `stop` and drains into the tally
        await asyncio.wait([self._first])
        error = None if self._first.cancelled() else self._first.exception()  # retrieved: never "unhandled"
        if error is not None and not isinstance(error, StopAsyncIteration):
            log.debug("head start ended with %r", error)
        await self._chunks.aclose()
