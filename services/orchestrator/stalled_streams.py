"""A token stream whose client stopped reading is ended after a bounded time (SLUICE_STREAM_IDLE_TIMEOUT_S).

A client that stops reading fills, in turn, its socket, Envoy's per-connection buffer and the HTTP/2 window Envoy
grants the orchestrator for the stream (envoy/envoy.yaml.tmpl); then gRPC's write of the next message does not
complete. A servicer's async generator is suspended at its `yield` while that write is pending, so nothing inside it
can notice. This interceptor wraps every response-streaming method and writes its messages itself: when one has
waited longer than the timeout to be written, it abandons the write, closes the handler's generators — the
servicer's clean-up stops the generation in the engine (its batch slot and KV blocks freed) and writes the usage
record as for a client that went away (status `cancelled`) — and ends the call as gRPC does when a client resets it.

Only a write the client does not take counts: time spent producing the next message (queueing, prefill, a stage,
the output guard) never does. The timer is armed at most once per timeout per stream, not once per token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter

from services.common.telemetry import current_request_id

log = logging.getLogger(__name__)

STALLED = Counter("sluice_stalled_streams_total",
                  "Response streams ended because the client read nothing for the stream idle timeout", ["method"])


class _WriteWatch:
    """Times the write of the message a stream is waiting to hand over; `on_stall` runs once if one takes longer
    than `timeout_s`."""

    def __init__(self, timeout_s: float, on_stall: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self.on_stall = on_stall
        self.loop = asyncio.get_running_loop()
        self.since: float | None = None  # when the pending write began; None while the stream is producing
        self.timer: asyncio.TimerHandle | None = None
        self.stalled = False

    def writing(self) -> None:
        self.since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.since + self.timeout_s, self._check)

    def written(self) -> None:
        self.since = None

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        if self.since is None:  # not writing now: the next write arms a new timer
            return
        if self.loop.time() - self.since < self.timeout_s:  # a later write, not yet overdue
            self.timer = self.loop.call_at(self.since + self.timeout_s, self._check)
            return
        self.stalled = True
        self.on_stall()


async def write_until_stalled(responses: AsyncIterator[Any], context: grpc.aio.ServicerContext, timeout_s: float,
                              method: str) -> None:
    """Writes `responses` to the call (gRPC's reader/writer API). A write still pending after `timeout_s` ends the
    call as a client reset would: the generator chain is closed here, in the call's task (so the servicer's and the
    interceptors' clean-up runs in the call's context), then CancelledError ends the handler."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("write_until_stalled must run in the call's task")
    watch = _WriteWatch(timeout_s, lambda: task.cancel("the client stopped reading"))
    try:
        async for response in responses:
            watch.writing()
            try:
                await context.write(response)
            except asyncio.CancelledError:
                if not watch.stalled:
                    raise  # the client went away, or the server is stopping
                task.uncancel()
                STALLED.labels(method).inc()
                log.warning("request %s (%s): the client read nothing for %.1f s; the stream is ended",
                            current_request_id.get(), method, timeout_s)
                break
            watch.written()
    finally:
        watch.stop()
        await responses.aclose()  # type: ignore[attr-defined]  # stops the generation, records the usage
    if watch.stalled:
        # No status can reach the client past the unread data (HTTP/2 trailers follow it): end as on a client reset.
        raise asyncio.CancelledError("the client stopped reading")


class StalledStreamInterceptor(grpc.aio.ServerInterceptor):
    """Ends response streams whose client stopped reading. Put it first: it is the outermost wrapper, and the
    handler it returns writes the messages itself (a coroutine handler, not an async generator)."""

    def __init__(self, idle_timeout_s: float) -> None:
        if idle_timeout_s <= 0:
            raise ValueError(f"the stream idle timeout must be positive, got {idle_timeout_s!r}")
        self.idle_timeout_s = idle_timeout_s

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_stream is None:
            return handler
        behavior, timeout_s, method = handler.unary_stream, self.idle_timeout_s, details.method

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> None:
            await write_until_stalled(behavior(request, context), context, timeout_s, method)

        return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)
