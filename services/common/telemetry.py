"""OpenTelemetry tracing for the Sluice services: the tracer provider, gRPC server and client interceptors, spans
around streams, and trace context for calls into Triton.

Every service exports OTLP/gRPC to SLUICE_OTLP_ENDPOINT, else to Sluice's own receiver (services/telemetry). W3C
`traceparent` travels in gRPC metadata, so Envoy's span, the orchestrator's server and stage spans, the safety and
retrieval services and Triton's own spans form one trace per request.

Triton 2.51 adopts a gRPC caller's `traceparent` only most of the time: its gRPC carrier hands OpenTelemetry the
metadata value as a C string (`string_ref::data()`), but gRPC metadata values are not NUL-terminated, so the length
is found by strlen and runs into whatever bytes follow the value; the W3C parser then rejects a header longer than
55 characters and Triton starts a new trace. So every Triton call also carries its trace context in the Triton
request id (`<id>;00-<trace>-<span>-01`), and the receiver re-parents any Triton trace that was not adopted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import filters
from opentelemetry.instrumentation.grpc._aio_client import UnaryUnaryAioClientInterceptor
from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from services.common.logging import current_request_id
from services.common.metrics import METRICS, LLMRequest, Metrics, status_of_grpc, status_of_http
from services.common.settings import Settings

log = logging.getLogger(__name__)

TRACER = "sluice"
TRACE_ID_HEADER = "x-sluice-trace-id"
REQUEST_ID_HEADER = "x-request-id"
# A client's x-request-id is kept verbatim when it is this safe (it reaches logs, spans and headers); the
# orchestrator refuses any other with a 400 (tenancy/auth.py), the other services replace it.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def is_safe_request_id(value: str) -> bool:
    return SAFE_REQUEST_ID.fullmatch(value) is not None
# Calls that are not traced or counted: health checks and reflection.
UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# The chat methods whose requests the LLM metrics count (TTFT, TPOT, goodput, tokens).
LLM_METHODS = frozenset({"/sluice.v1.OpenAI/ChatCompletions", "/sluice.v1.Chat/Generate"})
# `<triton request id>;<traceparent>`: the context a Triton call was made in, carried where Triton keeps it.
_CONTEXT_SUFFIX = re.compile(r";(?P<version>00)-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})$")


_tracer_of: tuple[object, trace.Tracer] | None = None  # (provider, its tracer): get_tracer builds a new one per call


def tracer() -> trace.Tracer:
    """Sluice's tracer from the current provider, built once per provider (spans are started per token batch and
    per call; `trace.get_tracer` costs a Tracer and an InstrumentationScope comparison each time)."""
    global _tracer_of
    provider = trace.get_tracer_provider()
    if _tracer_of is None or _tracer_of[0] is not provider:
        _tracer_of = (provider, provider.get_tracer(TRACER))
    return _tracer_of[1]


def setup_tracing(component: str, settings: Settings) -> TracerProvider:
    """Installs the process's tracer provider: spans of `component` go to the OTLP/gRPC endpoint in batches.
    New traces are sampled at `settings.trace_sample_rate`; a caller's sampling decision is followed."""
    resource = Resource.create({"service.name": component, "service.namespace": "sluice",
                                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_rate)))
    secure = (settings.otlp_endpoint or "").startswith("https://")
    exporter = OTLPSpanExporter(endpoint=settings.otlp_target, insecure=not secure, timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500, max_export_batch_size=512))
    trace.set_tracer_provider(provider)
    return provider


def trace_id_of(span: Span | None = None) -> str | None:
    context = (span or trace.get_current_span()).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def traceparent_of(span: Span) -> str | None:
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def outgoing_metadata(span: Span | None = None) -> list[tuple[str, str]]:
    """Headers for a call made inside `span` (else the current span): the W3C trace context, and x-request-id of
    the request being served, so the callee logs and tags the same id."""
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    if (request_id := current_request_id.get()) is not None:
        carrier[REQUEST_ID_HEADER] = request_id
    return list(carrier.items())


# --- per-request state ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestTelemetry:
    """What the interceptor knows about the call being served, for the code that serves it."""

    request_id: str
    method: str
    capture_content: bool = False
    llm: LLMRequest | None = None  # set for chat methods (LLM_METHODS)


current_request: ContextVar[RequestTelemetry | None] = ContextVar("sluice_request_telemetry", default=None)


class _Context:
    """The servicer context as the handler sees it: adds x-request-id and x-sluice-trace-id to the response
    headers (or trailers, if the call ends before sending headers) and remembers the status it ends with."""

    def __init__(self, inner: grpc.aio.ServicerContext, ids: list[tuple[str, str]]) -> None:
        self._inner = inner
        self._ids = ids
        self.headers_sent = False
        self.http_status: int | None = None
        self.code: grpc.StatusCode | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _with_ids(self, metadata: Any) -> tuple[tuple[str, str], ...]:
        entries = [tuple(item) for item in (metadata or ())]
        present = {key for key, _ in entries}
        return tuple(entries + [(key, value) for key, value in self._ids if key not in present])

    async def send_initial_metadata(self, metadata: Any) -> None:
        entries = self._with_ids(metadata)
        for key, value in entries:
            if key == "x-http-status" and str(value).isdigit():
                self.http_status = int(value)
        self.headers_sent = True
        await self._inner.send_initial_metadata(entries)

    async def ensure_headers(self) -> None:
        if not self.headers_sent:
            await self.send_initial_metadata(())

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self.code = code
        trailers = self._with_ids(trailing_metadata) if not self.headers_sent else tuple(trailing_metadata)
        await self._inner.abort(code, details, trailers)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code
        self._inner.set_code(code)


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Per call: the request id (x-request-id, else a new one) in the log context and on the server span, the ids
    in the response headers, gRPC call metrics, and for chat methods the request's LLM metrics once it ends."""

    def __init__(self, service: str, *, slo_ttft_s: float = 0.5, slo_tpot_s: float = 0.05,
                 capture_content: bool = False, metrics: Metrics = METRICS) -> None:
        self.service = service
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.capture_content = capture_content
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNTRACED):
            return handler
        return _wrap_handler(handler, details.method, self)

    def begin(self, method: str, context: grpc.aio.ServicerContext) -> tuple[_Context, RequestTelemetry, float]:
        sent = next((v for k, v in context.invocation_metadata() or () if k == REQUEST_ID_HEADER and v), None)
        request_id = sent if sent is not None and is_safe_request_id(sent) else str(uuid.uuid4())
        llm = LLMRequest() if method in LLM_METHODS else None
        state = RequestTelemetry(request_id, method, self.capture_content, llm)
        current_request.set(state)
        current_request_id.set(request_id)
        span = trace.get_current_span()
        span.set_attribute("sluice.request_id", request_id)
        ids = [(REQUEST_ID_HEADER, request_id)]
        if (trace_id := trace_id_of(span)) is not None:
            ids.append((TRACE_ID_HEADER, trace_id))
        return _Context(context, ids), state, time.perf_counter()

    def end(self, method: str, context: _Context, state: RequestTelemetry, started: float,
            error: BaseException | None) -> None:
        delivered = state.llm is not None and state.llm.finish_reason is not None
        if isinstance(error, asyncio.CancelledError | GeneratorExit) or (
                context.code is None and error is None and _cancelled(context)):
            # An SSE client that read the final event may hang up before the stream's trailers: that answer was
            # delivered in full, so it is not an abort.
            code, status = ("OK", "ok") if delivered else ("CANCELLED", "cancelled")
        elif context.code is not None:
            code = context.code.name
            status = status_of_grpc(code)
        elif error is not None:
            code, status = "UNKNOWN", "error"
        else:
            code = "OK"
            status = status_of_http(context.http_status) if context.http_status else "ok"
        self.metrics.rpc.labels(self.service, method, code).inc()
        self.metrics.rpc_seconds.labels(self.service, method).observe(time.perf_counter() - started)
        if state.llm is not None:
            state.llm.record(status, slo_ttft_s=self.slo_ttft_s, slo_tpot_s=self.slo_tpot_s, metrics=self.metrics)


def _cancelled(context: _Context) -> bool:
    try:
        return bool(context.cancelled())
    except Exception:  # a context that cannot tell
        return False


def _wrap_handler(handler: Any, method: str, interceptor: TelemetryInterceptor) -> Any:
    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}

    async def unary(request: Any, context: grpc.aio.ServicerContext, behavior: Callable) -> Any:
        traced, state, started = interceptor.begin(method, context)
        error: BaseException | None = None
        try:
            response = await behavior(request, traced)
            await traced.ensure_headers()
            return response
        except BaseException as exc:
            error = exc
            raise
        finally:
            interceptor.end(method, traced, state, started, error)

    async def streaming(request: Any, context: grpc.aio.ServicerContext, behavior: Callable) -> AsyncIterator[Any]:
        traced, state, started = interceptor.begin(method, context)
        error: BaseException | None = None
        try:
            async for response in behavior(request, traced):
                await traced.ensure_headers()
                yield response
            await traced.ensure_headers()
        except BaseException as exc:
            error = exc
            raise
        finally:
            interceptor.end(method, traced, state, started, error)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: unary(request, context, handler.unary_unary), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            lambda request, context: streaming(request, context, handler.unary_stream), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            lambda requests, context: unary(requests, context, handler.stream_unary), **serializers)
    return grpc.stream_stream_rpc_method_handler(
        lambda requests, context: streaming(requests, context, handler.stream_stream), **serializers)


def _traced_call(details: Any) -> bool:
    method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
    return not method.startswith(UNTRACED)


def server_interceptors(service: str, settings: Settings | None = None,
                        metrics: Metrics = METRICS) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors every Sluice gRPC server starts with (put other interceptors after these): the server span
    from the caller's traceparent, then request ids, response headers and metrics."""
    settings = settings or Settings()
    otel = OpenTelemetryAioServerInterceptor(tracer(), filter_=filters.negate(filters.any_of(
        filters.health_check(), filters.service_prefix("grpc.reflection"))))
    return [otel, TelemetryInterceptor(service, slo_ttft_s=settings.slo_ttft_ms / 1000,
                                       slo_tpot_s=settings.slo_tpot_ms / 1000,
                                       capture_content=settings.trace_content, metrics=metrics)]


class _RequestIdInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Passes the x-request-id of the request being served on to the service being called."""

    async def intercept_unary_unary(self, continuation: Callable, details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        request_id = current_request_id.get()
        metadata = list(details.metadata or ())
        if request_id is not None and not any(key == REQUEST_ID_HEADER for key, _ in metadata):
            details = grpc.aio.ClientCallDetails(details.method, details.timeout,
                                                 grpc.aio.Metadata(*metadata, (REQUEST_ID_HEADER, request_id)),
                                                 details.credentials, details.wait_for_ready)
        return await continuation(details, request)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """For channels between Sluice services: a client span per unary call, whose traceparent goes in the metadata,
    and the request id. (Streaming calls send `outgoing_metadata()` themselves: the generic stream interceptors do
    not fit the read()/write() style those calls use.)"""
    return [UnaryUnaryAioClientInterceptor(tracer(), filter_=_traced_call), _RequestIdInterceptor()]


# --- spans in the request path ----------------------------------------------------------------------------------


@contextmanager
def stage_span(name: str, attributes: dict[str, Any] | None = None,
               on_end: Callable[[str, float], None] | None = None) -> Iterator[Span]:
    """A span around an awaited step (e.g. a pipeline stage); `on_end(outcome, seconds)` is called when it ends,
    outcome "ok" or "error". Do not hold it across `yield` in an async generator: use `traced_stream`."""
    started = time.perf_counter()
    outcome = "ok"
    with tracer().start_as_current_span(name, attributes=attributes, record_exception=True,
                                        set_status_on_exception=True) as span:
        try:
            yield span
        except BaseException:
            outcome = "error"
            raise
        finally:
            if on_end is not None:
                on_end(outcome, time.perf_counter() - started)


@contextmanager
def client_span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A CLIENT span around an awaited call to something outside the process that is not traced itself (e.g. a
    Milvus search). Safe across awaits in a coroutine, and across `asyncio.to_thread` (the context is copied)."""
    with tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def traced_stream(name: str, events: AsyncIterator[Any], *, attributes: dict[str, Any] | None = None,
                  on_event: Callable[[Span, Any], None] | None = None,
                  on_end: Callable[[Span, str, float], None] | None = None,
                  final: Callable[[Any], bool] | None = None, span: Span | None = None) -> AsyncIterator[Any]:
    """Wraps an async stream in a span that starts at its first item and ends when it ends. The parent is the
    span current *now* (not whoever iterates), and the span is current only while `events` runs, never across the
    consumer's code, so stream stages that wrap each other stay siblings. `on_end(span, outcome, seconds)` sees
    outcome "ok", "error" or "cancelled" (closed early, unless the last item passed was `final`). `span`: one
    already started for this stream (work it began earlier, e.g. an engine call made ahead of time); it is ended
    here like a span of its own."""
    return _traced_stream(name, events, otel_context.get_current(), attributes, on_event, on_end, final, span)


async def _traced_stream(name: str, events: AsyncIterator[Any], parent: otel_context.Context,
                         attributes: dict[str, Any] | None, on_event: Callable[[Span, Any], None] | None,
                         on_end: Callable[[Span, str, float], None] | None,
                         final: Callable[[Any], bool] | None, span: Span | None = None) -> AsyncIterator[Any]:
    if span is None:
        span = tracer().start_span(name, context=parent, attributes=attributes)
    elif attributes:
        span.set_attributes(attributes)
    current = trace.set_span_in_context(span, parent)
    started = time.perf_counter()
    outcome = "ok"
    done = False
    try:
        while True:
            token = otel_context.attach(current)
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
            finally:
                otel_context.detach(token)
            if on_event is not None:
                on_event(span, event)
            done = final is not None and final(event)
            yield event
    except (GeneratorExit, asyncio.CancelledError):
        outcome = "ok" if done else "cancelled"
        raise
    except BaseException as exc:
        outcome = "error"
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            token = otel_context.attach(current)
            try:
                await aclose()
            finally:
                otel_context.detach(token)
        if on_end is not None:
            on_end(span, outcome, time.perf_counter() - started)
        span.end()


@dataclass(slots=True)
class TritonCall:
    """A client span around one call into Triton, and what to send with the call: `request_id` with the trace
    context appended, and `headers` with the W3C traceparent (Triton adopts it most of the time)."""

    span: Span
    request_id: str
    headers: dict[str, str]

    def fail(self, error: BaseException) -> None:
        self.span.record_exception(error)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def end(self) -> None:
        self.span.end()


def start_triton_call(model: str, request_id: str = "", *, method: str = "ModelInfer",
                      attributes: dict[str, Any] | None = None) -> TritonCall:
    """Starts the client span of a call to Triton's `model`, a child of the current span. End it with
    `.end()` when the call (or its stream) ends."""
    span = tracer().start_span(f"triton {model}", kind=SpanKind.CLIENT, attributes={
        "rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": method,
        "triton.model_name": model, **(attributes or {})})
    headers = dict(outgoing_metadata(span))
    traced_id = with_trace_context(request_id or uuid.uuid4().hex, span)
    span.set_attribute("triton.request_id", traced_id)
    return TritonCall(span, traced_id, headers)


def with_trace_context(request_id: str, span: Span) -> str:
    """`request_id;<traceparent of span>` (unchanged when the span has no valid context)."""
    traceparent = traceparent_of(span)
    return f"{request_id};{traceparent}" if traceparent else request_id


@dataclass(frozen=True, slots=True)
class CarriedContext:
    trace_id: str
    span_id: str
    sampled: bool


def context_from_request_id(request_id: str) -> CarriedContext | None:
    """The trace context `with_trace_context` put in a Triton request id, if any."""
    match = _CONTEXT_SUFFIX.search(request_id or "")
    if match is None:
        return None
    return CarriedContext(match["trace"], match["span"], bool(int(match["flags"], 16) & 1))


_ATTEMPT_SUFFIX = re.compile(r":[0-9a-f]{8}$")


def caller_request_id(triton_request_id: str) -> str | None:
    """The caller's request id inside a Triton request id made by the orchestrator (`<id>:<8 hex>;<traceparent>`),
    or None for an id that does not have that shape."""
    base = _CONTEXT_SUFFIX.sub("", triton_request_id or "")
    if not _ATTEMPT_SUFFIX.search(base):
        return None
    return _ATTEMPT_SUFFIX.sub("", base) or None
