"""The local OTLP receiver: OTLP/JSON (Triton's hex-id flavour) and protobuf decoding, the repair of Triton traces
that did not adopt their caller's context, the span store, the HTTP/gRPC servers and the waterfall."""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from services.common.settings import Settings
from services.common.telemetry import caller_request_id, context_from_request_id
from services.telemetry.otlp import decode_json, decode_protobuf, row_of, spans_of
from services.telemetry.repair import TraceRepair
from services.telemetry.server import start
from services.telemetry.store import SpanStore
from services.telemetry.waterfall import ordered, render
from tests.conftest import free_ports


def _hex(n: int) -> str:
    return secrets.token_hex(n)


def triton_export(triton_trace: str, request_id: str, *, with_root: bool = True, with_model: bool = True,
                  with_compute: bool = True, root_parent: str = "") -> bytes:
    """An OTLP/JSON body shaped like Triton 2.51's: hex ids, int64 as strings, scope `triton-server`."""
    root, model, compute = _hex(8), _hex(8), _hex(8)
    spans = []
    if with_compute:
        spans.append({"traceId": triton_trace, "spanId": compute, "parentSpanId": model, "name": "compute",
                      "kind": 2, "startTimeUnixNano": "1000300", "endTimeUnixNano": "1000900",
                      "events": [{"name": "COMPUTE_START", "timeUnixNano": "1000300"}]})
    if with_model:
        spans.append({"traceId": triton_trace, "spanId": model, "parentSpanId": root, "name": "tensorrt_llm",
                      "kind": 2, "startTimeUnixNano": "1000200", "endTimeUnixNano": "1001000", "attributes": [
                          {"key": "triton.model_name", "value": {"stringValue": "tensorrt_llm"}},
                          {"key": "triton.model_version", "value": {"intValue": "1"}},
                          {"key": "triton.request_id", "value": {"stringValue": request_id}}]})
    if with_root:
        root_span = {"traceId": triton_trace, "spanId": root, "name": "InferRequest", "kind": 2,
                     "startTimeUnixNano": "1000100", "endTimeUnixNano": "1002000"}
        if root_parent:
            root_span["parentSpanId"] = root_parent
        spans.append(root_span)
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                           "value": {"stringValue": "triton"}}]},
                               "scopeSpans": [{"scope": {"name": "triton-server"}, "spans": spans}]}]}
    return json.dumps(body).encode()


def items_of(body: bytes) -> list:
    return list(spans_of(decode_json(body)))


def test_otlp_json_with_hex_ids_decodes_like_triton_sends_it() -> None:
    trace_id = _hex(16)
    items = items_of(triton_export(trace_id, "req-1:0badf00d"))
    rows = [row_of(resource, span) for resource, _, span in items]
    assert [r.name for r in rows] == ["compute", "tensorrt_llm", "InferRequest"]
    assert {r.trace_id for r in rows} == {trace_id} and {r.service for r in rows} == {"triton"}
    model = rows[1]
    assert model.attributes["triton.model_version"] == 1 and model.parent_span_id == rows[2].span_id
    assert model.request_id == "req-1"  # the caller's request id, found in Triton's request id
    assert rows[0].events == [{"name": "COMPUTE_START", "time_ns": 1000300, "attributes": {}}]
    assert rows[2].parent_span_id == "" and rows[0].duration_ns == 600


def test_request_id_carries_the_trace_context() -> None:
    trace_id, span_id = _hex(16), _hex(8)
    carried = context_from_request_id(f"abc:12345678;00-{trace_id}-{span_id}-01")
    assert carried is not None and (carried.trace_id, carried.span_id, carried.sampled) == (trace_id, span_id, True)
    assert context_from_request_id(f"abc;00-{trace_id}-{span_id}-00").sampled is False
    assert context_from_request_id("plain-id") is None
    assert caller_request_id(f"req-9:deadbeef;00-{trace_id}-{span_id}-01") == "req-9"
    assert caller_request_id("0123456789abcdef") is None  # an id Sluice did not make


def test_a_trace_triton_did_not_adopt_is_reparented_under_its_caller() -> None:
    caller_trace, caller_span, triton_trace = _hex(16), _hex(8), _hex(16)
    repair = TraceRepair()
    out = repair.feed(items_of(triton_export(triton_trace, f"req:00c0ffee;00-{caller_trace}-{caller_span}-01")))
    rows = {span.name: row_of(resource, span) for resource, _, span in out}
    assert {r.trace_id for r in rows.values()} == {caller_trace}
    assert rows["InferRequest"].parent_span_id == caller_span  # the root hangs under the orchestrator's span
    assert rows["InferRequest"].attributes["sluice.repaired_from_trace"] == triton_trace
    assert rows["tensorrt_llm"].parent_span_id == rows["InferRequest"].span_id  # the rest keeps its shape
    assert repair.repaired == 1 and repair.held == 0


def test_an_adopted_trace_and_one_without_context_pass_unchanged() -> None:
    caller_trace, caller_span = _hex(16), _hex(8)
    repair = TraceRepair()
    adopted = repair.feed(items_of(triton_export(caller_trace, f"r:00c0ffee;00-{caller_trace}-{caller_span}-01",
                                                 root_parent=caller_span)))
    own_trace = _hex(16)
    direct = repair.feed(items_of(triton_export(own_trace, "a-direct-client")))
    assert {span.trace_id.hex() for _, _, span in adopted} == {caller_trace}
    assert {span.trace_id.hex() for _, _, span in direct} == {own_trace}
    assert repair.repaired == 0 and len(adopted) == len(direct) == 3


def test_spans_wait_for_the_span_that_names_their_request() -> None:
    caller_trace, caller_span, triton_trace = _hex(16), _hex(8), _hex(16)
    request_id = f"r:00c0ffee;00-{caller_trace}-{caller_span}-01"
    repair = TraceRepair()
    # compute ends first, so it can arrive in an earlier export than the model span that carries the request id
    assert repair.feed(items_of(triton_export(triton_trace, request_id, with_root=False, with_model=False))) == []
    assert repair.held == 1
    released = repair.feed(items_of(triton_export(triton_trace, request_id, with_compute=False)))
    assert len(released) == 3 and {span.trace_id.hex() for _, _, span in released} == {caller_trace}


def test_held_spans_are_released_unrepaired_after_the_hold_time() -> None:
    now = [100.0]
    repair = TraceRepair(hold_s=2.0, clock=lambda: now[0])
    repair.feed(items_of(triton_export(_hex(16), "x", with_model=False)))
    assert repair.expire() == [] and repair.held == 2
    now[0] += 2.5
    assert len(repair.expire()) == 2 and repair.held == 0


def test_triton_spans_of_an_unsampled_caller_are_dropped() -> None:
    repair = TraceRepair()
    out = repair.feed(items_of(triton_export(_hex(16), f"r:00c0ffee;00-{_hex(16)}-{_hex(8)}-00")))
    assert out == [] and repair.dropped == 3


def test_store_finds_traces_by_trace_id_and_request_id_and_keeps_the_newest(tmp_path: Path) -> None:
    store = SpanStore(tmp_path / "spans.db", max_spans=1000)
    traces = [_hex(16) for _ in range(3)]
    for i, trace_id in enumerate(traces):
        items = items_of(triton_export(trace_id, f"req-{i}:0000000{i}"))
        store.add([row_of(resource, span) for resource, _, span in items])
    assert [s.name for s in store.find(traces[1])] == ["InferRequest", "tensorrt_llm", "compute"]
    assert store.find("req-2")[0].trace_id == traces[2]
    assert store.find("no-such-request") == []
    assert [t["trace_id"] for t in store.recent(2)] == [traces[2], traces[1]]
    for _ in range(700):  # 2100 more spans: the oldest are pruned (every 1000 inserts, down to 1000)
        store.add([row_of(r, s) for r, _, s in items_of(triton_export(_hex(16), "filler"))])
    assert store.find(traces[0]) == [] and store.count() <= 2000
    store.close()


@pytest.fixture
def receiver(tmp_path: Path):
    grpc_port, http_port = free_ports(2)
    settings = Settings(otlp_grpc_port=grpc_port, otlp_http_port=http_port, run_dir=tmp_path)
    receiver, grpc_server, http_server = start(settings)
    yield settings, receiver
    http_server.shutdown()
    grpc_server.stop(0)
    receiver.close()
    receiver.store.close()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def test_receiver_takes_otlp_http_json_and_grpc_and_answers_trace_queries(receiver) -> None:
    settings, running = receiver
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # the orchestrator's side, exported over OTLP/gRPC by the real SDK exporter
    provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=settings.otlp_target, insecure=True)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("server", attributes={"sluice.request_id": "req-42"}) as server, \
            tracer.start_as_current_span("generate"), tracer.start_as_current_span("triton tensorrt_llm") as client:
        trace_id = format(server.get_span_context().trace_id, "032x")
        client_span = format(client.get_span_context().span_id, "016x")
    provider.shutdown()
    # Triton's side over OTLP/HTTP JSON, in a trace of its own (the context was not adopted)
    body = triton_export(_hex(16), f"req-42:0badcafe;00-{trace_id}-{client_span}-01")
    request = urllib.request.Request(f"{settings.telemetry_url}/v1/traces", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200 and json.loads(reply.read()) == {}
    running.flush()

    by_request = _get(f"{settings.telemetry_url}/api/traces/req-42")
    by_trace = _get(f"{settings.telemetry_url}/api/traces/{trace_id}")
    assert by_request.pop("request_traces") == [trace_id]  # the request is in this one trace only
    assert by_request == by_trace and by_trace["trace_id"] == trace_id
    depth_names = [(depth, span["name"]) for depth, span in ordered(by_trace["spans"])]
    assert depth_names == [(0, "server"), (1, "generate"), (2, "triton tensorrt_llm"), (3, "InferRequest"),
                           (4, "tensorrt_llm"), (5, "compute")]
    text = render(by_trace)
    assert text.splitlines()[0].startswith(f"trace {trace_id}  request req-42  6 spans")
    assert "orchestrator" in text and "triton" in text and "      InferRequest" in text
    metrics = urllib.request.urlopen(f"{settings.telemetry_url}/metrics", timeout=5).read().decode()
    assert "sluice_telemetry_traces_repaired 1.0" in metrics


def test_receiver_rejects_what_is_not_otlp(receiver) -> None:
    settings, _ = receiver
    request = urllib.request.Request(f"{settings.telemetry_url}/v1/traces", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{settings.telemetry_url}/api/traces/{_hex(16)}", timeout=5)
    assert missing.value.code == 404


def test_protobuf_bodies_decode_too() -> None:
    request = decode_json(triton_export(_hex(16), "x"))
    assert decode_protobuf(request.SerializeToString()) == request
    assert isinstance(request, ExportTraceServiceRequest)


def test_the_fast_json_decoder_matches_protobufs_own_json_parser() -> None:
    from google.protobuf import json_format

    from services.telemetry.otlp import _hex_ids_to_base64

    span = {"traceId": _hex(16), "spanId": _hex(8), "parentSpanId": _hex(8), "name": "s", "kind": 3,
            "startTimeUnixNano": "5", "endTimeUnixNano": 9, "status": {"code": 2, "message": "boom"},
            "attributes": [{"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"boolValue": True}]}}},
                           {"key": "b", "value": {"kvlistValue": {"values": [{"key": "c",
                                                                              "value": {"doubleValue": 0.5}}]}}}],
            "events": [{"name": "e", "timeUnixNano": "7", "attributes": [{"key": "x",
                                                                           "value": {"stringValue": "y"}}]}],
            "links": [{"traceId": _hex(16), "spanId": _hex(8)}], "droppedAttributesCount": 2}
    payload = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                              "value": {"stringValue": "x"}}]},
                                  "scopeSpans": [{"scope": {"name": "lib", "version": "1"}, "spans": [span]}]}]}
    reference = json_format.ParseDict(_hex_ids_to_base64(payload), ExportTraceServiceRequest())
    assert decode_json(json.dumps(payload).encode()) == reference
