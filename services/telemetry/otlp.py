"""OTLP trace payloads in and out: protobuf (gRPC and HTTP) and OTLP/JSON (HTTP; Triton exports this), decoded into
ExportTraceServiceRequest, and flattened into the rows the store keeps.

OTLP/JSON differs from protobuf's canonical JSON in one way that matters here: trace and span ids are hex strings,
not base64."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from services.common.telemetry import caller_request_id

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class PayloadError(ValueError):
    """The body is not an OTLP trace export."""


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    out[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as exc:
                    raise PayloadError(f"{key} is not hex: {value!r}") from exc
            else:
                out[key] = _hex_ids_to_base64(value)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def _any_value(node: dict[str, Any]) -> AnyValue:
    if "stringValue" in node:
        return AnyValue(string_value=node["stringValue"])
    if "intValue" in node:
        return AnyValue(int_value=int(node["intValue"]))
    if "boolValue" in node:
        return AnyValue(bool_value=bool(node["boolValue"]))
    if "doubleValue" in node:
        return AnyValue(double_value=float(node["doubleValue"]))
    if "arrayValue" in node:
        out = AnyValue()
        out.array_value.values.extend(_any_value(v) for v in node["arrayValue"].get("values", []))
        return out
    if "kvlistValue" in node:
        out = AnyValue()
        out.kvlist_value.values.extend(_key_values(node["kvlistValue"].get("values", [])))
        return out
    if "bytesValue" in node:
        return AnyValue(bytes_value=base64.b64decode(node["bytesValue"]))
    return AnyValue()


def _key_values(pairs: list[dict[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=kv["key"], value=_any_value(kv.get("value") or {})) for kv in pairs]


def _span(node: dict[str, Any]) -> Span:
    """One OTLP/JSON span. The common fields are built directly (json_format is several times slower); anything
    else (links, ...) goes through json_format."""
    rest = {k: v for k, v in node.items() if k not in _DIRECT_FIELDS}
    span = json_format.ParseDict(_hex_ids_to_base64(rest), Span(), ignore_unknown_fields=True) if rest else Span()
    span.trace_id = bytes.fromhex(node.get("traceId", ""))
    span.span_id = bytes.fromhex(node.get("spanId", ""))
    span.parent_span_id = bytes.fromhex(node.get("parentSpanId", ""))
    span.name = node.get("name", "")
    span.kind = int(node.get("kind", 0))
    span.start_time_unix_nano = int(node.get("startTimeUnixNano", 0))
    span.end_time_unix_nano = int(node.get("endTimeUnixNano", 0))
    span.attributes.extend(_key_values(node.get("attributes", [])))
    for event in node.get("events", []):
        span.events.add(time_unix_nano=int(event.get("timeUnixNano", 0)), name=event.get("name", ""),
                        attributes=_key_values(event.get("attributes", [])))
    if "status" in node:
        span.status.code = int(node["status"].get("code", 0))
        span.status.message = node["status"].get("message", "")
    return span


_DIRECT_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano",
                            "endTimeUnixNano", "attributes", "events", "status"})


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        payload = json.loads(body)
        request = ExportTraceServiceRequest()
        for resource_node in payload.get("resourceSpans", []):
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(
                _key_values((resource_node.get("resource") or {}).get("attributes", [])))
            resource_spans.schema_url = resource_node.get("schemaUrl", "")
            for scope_node in resource_node.get("scopeSpans", []):
                scope_spans = resource_spans.scope_spans.add()
                scope = scope_node.get("scope") or {}
                scope_spans.scope.name = scope.get("name", "")
                scope_spans.scope.version = scope.get("version", "")
                scope_spans.schema_url = scope_node.get("schemaUrl", "")
                scope_spans.spans.extend(_span(span) for span in scope_node.get("spans", []))
        return request
    except (json.JSONDecodeError, json_format.ParseError, UnicodeDecodeError, ValueError, TypeError,
            AttributeError, KeyError) as exc:
        raise PayloadError(f"not OTLP/JSON: {exc}") from exc


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(body)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise PayloadError(f"not an OTLP protobuf export: {exc}") from exc


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


def string_attribute(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


@dataclass(slots=True)
class SpanRow:
    """One span as the store keeps it (ids in lower-case hex)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str  # "unset" | "ok" | "error"
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    request_id: str | None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    def as_json(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "span_id": self.span_id, "parent_span_id": self.parent_span_id or None,
                "service": self.service, "name": self.name, "kind": self.kind, "start_ns": self.start_ns,
                "end_ns": self.end_ns, "duration_ms": round(self.duration_ns / 1e6, 3), "status": self.status,
                "status_message": self.status_message, "attributes": self.attributes, "events": self.events,
                "request_id": self.request_id}


# Attributes that name the request a span belongs to: the orchestrator's (set from x-request-id) and Envoy's.
REQUEST_ID_ATTRIBUTES = ("sluice.request_id", "guid:x-request-id")
_STATUS = {0: "unset", 1: "ok", 2: "error"}


def service_of(resource: Resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(value_of(kv.value))
    return "unknown"


def row_of(resource: Resource, span: Span) -> SpanRow:
    attributes = attributes_of(span.attributes)
    request_id = next((str(attributes[k]) for k in REQUEST_ID_ATTRIBUTES if attributes.get(k)), None)
    if request_id is None and attributes.get("triton.request_id"):
        request_id = caller_request_id(str(attributes["triton.request_id"]))
    events = [{"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes_of(e.attributes)}
              for e in span.events]
    return SpanRow(span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), service_of(resource),
                   span.name, SPAN_KINDS.get(span.kind, str(span.kind)), span.start_time_unix_nano,
                   span.end_time_unix_nano, _STATUS.get(span.status.code, "unset"), span.status.message, attributes,
                   events, request_id)


def spans_of(request: ExportTraceServiceRequest) -> Iterator[tuple[Resource, ScopeSpans, Span]]:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield resource_spans.resource, scope_spans, span


def build_request(items: list[tuple[Resource, ScopeSpans, Span]]) -> ExportTraceServiceRequest:
    """An export request holding `items`, grouped again by resource and scope."""
    request = ExportTraceServiceRequest()
    groups: dict[tuple[bytes, bytes], list[Span]] = {}
    heads: dict[tuple[bytes, bytes], tuple[Resource, ScopeSpans]] = {}
    for resource, scope_spans, span in items:
        key = (resource.SerializeToString(deterministic=True),
               scope_spans.scope.SerializeToString(deterministic=True))
        groups.setdefault(key, []).append(span)
        heads.setdefault(key, (resource, scope_spans))
    for key, spans in groups.items():
        resource, scope_spans = heads[key]
        out = request.resource_spans.add()
        out.resource.CopyFrom(resource)
        scope = out.scope_spans.add()
        scope.scope.CopyFrom(scope_spans.scope)
        scope.schema_url = scope_spans.schema_url
        scope.spans.extend(spans)
    return request
