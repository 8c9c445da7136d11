"""Tracing inside a service: the gRPC server interceptors (server span from the caller's traceparent, request id and
trace id in the response headers, call metrics), stream spans that stay siblings, Triton call context, and the
JSON log lines that carry the request, trace and span ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from services.common.logging import JsonFormatter, configure_logging, current_request_id, level_for
from services.common.metrics import Metrics, sample_values
from services.common.settings import Settings
from services.common.telemetry import (
    TRACE_ID_HEADER,
    context_from_request_id,
    current_request,
    outgoing_metadata,
    server_interceptors,
    start_triton_call,
    traced_stream,
    tracer,
)


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """Spans of this process go to memory (the SDK provider is process-wide: installed once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


def ids(span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# --- the server interceptors, on a real grpc.aio server ---------------------------------------------------------

async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    state = current_request.get()
    logging.getLogger("test.echo").info("saying")
    return b"said:" + state.request_id.encode()


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    state = current_request.get()
    if state.llm is not None:  # registered as a chat method: play the pipeline's part
        state.llm.model, state.llm.tenant = "m", "t"
        state.llm.tokens_arrived(1)
    for part in (b"a", b"b"):
        yield part
    if request == b"fail":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")


def _handlers() -> list[grpc.GenericRpcHandler]:
    raw = {"request_deserializer": None, "response_serializer": None}
    return [
        grpc.method_handlers_generic_handler("test.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(_say, **raw),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream, **raw)}),
        grpc.method_handlers_generic_handler("sluice.v1.Chat", {
            "Generate": grpc.unary_stream_rpc_method_handler(_stream, **raw)}),
    ]


async def _serve_and_call(metrics: Metrics, calls) -> list:
    server = grpc.aio.server(interceptors=server_interceptors("test", Settings(), metrics=metrics))
    server.add_generic_rpc_handlers(_handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return [await call(channel) for call in calls]
    finally:
        await server.stop(0)


def test_server_span_continues_the_callers_trace_and_names_it_in_the_headers(exporter: InMemorySpanExporter) -> None:
    metrics = Metrics(CollectorRegistry())
    exporter.clear()
    with tracer().start_as_current_span("caller") as caller:
        metadata = (*outgoing_metadata(caller), ("x-request-id", "req-7"))
    trace_id, caller_span = ids(caller)

    async def say(channel: grpc.aio.Channel):
        call = channel.unary_unary("/test.Echo/Say")(b"hi", metadata=metadata)
        return await call, dict(await call.initial_metadata())

    async def say_without_id(channel: grpc.aio.Channel):
        call = channel.unary_unary("/test.Echo/Say")(b"hi")
        return await call, dict(await call.initial_metadata())

    (reply, headers), (other_reply, other_headers) = asyncio.run(_serve_and_call(metrics, [say, say_without_id]))
    assert reply == b"said:req-7" and headers["x-request-id"] == "req-7"
    assert headers[TRACE_ID_HEADER] == trace_id
    server_span = next(s for s in exporter.get_finished_spans() if s.name == "/test.Echo/Say"
                       and s.attributes.get("sluice.request_id") == "req-7")
    assert format(server_span.parent.span_id, "016x") == caller_span
    assert format(server_span.context.trace_id, "032x") == trace_id
    generated = other_headers["x-request-id"]  # a call without an id gets one, the same the handler sees
    assert other_reply == b"said:" + generated.encode() and len(generated) == 36
    assert other_headers[TRACE_ID_HEADER] != trace_id  # a new trace
    assert sum(v for labels, v in sample_values(metrics.registry, "sluice_rpc_requests_total")
               if labels["method"] == "/test.Echo/Say" and labels["code"] == "OK") == 2


def test_chat_calls_are_recorded_with_the_status_they_ended_with(exporter: InMemorySpanExporter) -> None:
    metrics = Metrics(CollectorRegistry())

    async def generate(payload: bytes):
        async def call(channel: grpc.aio.Channel):
            stream = channel.unary_stream("/sluice.v1.Chat/Generate")(payload)
            try:
                parts = [part async for part in stream]
            except grpc.aio.AioRpcError as error:
                return error.code(), dict(error.trailing_metadata() or ())
            return parts, dict(await stream.initial_metadata())
        return call

    async def run():
        return await _serve_and_call(metrics, [await generate(b"ok"), await generate(b"fail")])

    (parts, headers), (code, trailers) = asyncio.run(run())
    assert parts == [b"a", b"b"] and "x-request-id" in headers and TRACE_ID_HEADER in headers
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    samples = {(labels["status"]): v for labels, v in sample_values(metrics.registry, "sluice_requests_total")}
    assert samples == {"ok": 1.0, "client_error": 1.0}
    ttft = [v for labels, v in sample_values(metrics.registry, "sluice_ttft_seconds_count")]
    assert ttft == [2.0]


# --- spans around streams ---------------------------------------------------------------------------------------

def test_stream_stages_are_siblings_and_current_only_while_they_run(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    seen: dict[str, list[str]] = {"generate": [], "guard": []}

    async def generation() -> AsyncIterator[str]:
        for token in ("a", "b", "END"):
            seen["generate"].append(trace.get_current_span().name)
            yield token

    async def moderation(events: AsyncIterator[str]) -> AsyncIterator[str]:
        async for event in events:
            seen["guard"].append(trace.get_current_span().name)
            yield event.upper()
            if event == "END":
                return  # stops reading early, right after the final event: not a cancellation

    async def run() -> list[str]:
        with tracer().start_as_current_span("request"):
            generated = traced_stream("generate", generation(), final=lambda e: e == "END")
            guarded = traced_stream("output_guard", moderation(generated), final=lambda e: e == "END")
            out = [event async for event in guarded]
            assert trace.get_current_span().name == "request"  # nothing leaked into the consumer
            return out

    assert asyncio.run(run()) == ["A", "B", "END"]
    assert seen == {"generate": ["generate"] * 3, "guard": ["output_guard"] * 3}
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["generate"].parent.span_id == spans["request"].context.span_id
    assert spans["output_guard"].parent.span_id == spans["request"].context.span_id
    assert spans["generate"].status.is_ok and spans["output_guard"].status.is_ok


def test_a_stream_closed_before_its_end_is_cancelled() -> None:
    outcomes: list[str] = []

    async def endless() -> AsyncIterator[int]:
        n = 0
        while True:
            n += 1
            yield n

    async def run() -> None:
        stream = traced_stream("generate", endless(), on_end=lambda span, outcome, s: outcomes.append(outcome))
        async for n in stream:
            if n == 3:
                break
        await stream.aclose()

    asyncio.run(run())
    assert outcomes == ["cancelled"]


def test_a_triton_call_carries_its_context_in_headers_and_request_id(exporter: InMemorySpanExporter) -> None:
    with tracer().start_as_current_span("generate") as parent:
        call = start_triton_call("tensorrt_llm", "req-1:0badf00d", method="ModelStreamInfer")
        call.end()
    trace_id, _ = ids(parent)
    client_trace, client_span = ids(call.span)
    assert client_trace == trace_id
    flags = f"{int(call.span.get_span_context().trace_flags):02x}"  # sampled (and, new traces, random) bits
    assert call.headers["traceparent"] == f"00-{trace_id}-{client_span}-{flags}"
    assert call.request_id == f"req-1:0badf00d;00-{trace_id}-{client_span}-{flags}"
    carried = context_from_request_id(call.request_id)
    assert (carried.trace_id, carried.span_id, carried.sampled) == (trace_id, client_span, True)


# --- JSON logs --------------------------------------------------------------------------------------------------

def test_every_log_line_is_json_with_request_trace_and_span_ids(exporter: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("orchestrator"))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        token = current_request_id.set("req-3")
        with tracer().start_as_current_span("work") as span:
            logger.info("request %s: %d tokens", "req-3", 5, extra={"tokens": 5})
        current_request_id.reset(token)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    trace_id, span_id = ids(span)
    assert inside["message"] == "request req-3: 5 tokens" and inside["tokens"] == 5
    assert (inside["request_id"], inside["trace_id"], inside["span_id"]) == ("req-3", trace_id, span_id)
    assert (inside["component"], inside["level"], inside["logger"]) == ("orchestrator", "info", "test.json")
    assert outside["request_id"] is None and outside["trace_id"] is None and outside["level"] == "warning"


def test_log_levels_per_component() -> None:
    spec = "warning,orchestrator=debug, safety = error"
    assert level_for(spec, "orchestrator") == logging.DEBUG
    assert level_for(spec, "safety") == logging.ERROR
    assert level_for(spec, "retrieval") == logging.WARNING
    assert level_for("", "retrieval") == logging.INFO
    with pytest.raises(ValueError, match="unknown log level"):
        level_for("info,orchestrator=loud", "orchestrator")


def test_configure_logging_makes_the_root_logger_write_json() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("safety", "error,safety=info", stream)
        logging.getLogger("x").info("hello")
        logging.getLogger("x").debug("hidden")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["component"], line["message"]) for line in lines] == [("safety", "hello")]
