"""Makes Triton's traces whole.

Triton 2.51 adopts a gRPC caller's `traceparent` most of the time, not always (see services/common/telemetry.py for
why). When it does not, its spans form a trace of their own: an `InferRequest` root, the model's request span and
its compute spans, under a trace id Triton made up. Sluice puts the caller's context in the Triton request id as well,
and Triton records that id on the model's request span (`triton.request_id`). From it this module learns, per Triton
trace, where the spans belong, and rewrites them: the caller's trace id on every span, the caller's span as the root's
parent. Spans of a Triton trace are held back until the span that carries the request id has been seen (at most
`hold_s`; they usually come in the same export), so nothing is stored or forwarded under the wrong trace.

A context with the sampled flag off means the caller did not record this request: Triton's spans for it are
dropped, so sampling decided at the edge holds for Triton too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from services.common.telemetry import context_from_request_id
from services.telemetry.otlp import string_attribute, value_of

Item = tuple[Resource, ScopeSpans, Span]
TRITON_SCOPE = "triton-server"
REQUEST_ID_ATTRIBUTE = "triton.request_id"
_KEEP, _DROP = "keep", "drop"


@dataclass(frozen=True, slots=True)
class Reparent:
    trace_id: bytes
    parent_span_id: bytes


@dataclass(slots=True)
class _Held:
    since: float
    items: list[Item] = field(default_factory=list)


def is_triton(item: Item) -> bool:
    return item[1].scope.name == TRITON_SCOPE


def _request_id(span: Span) -> str | None:
    for kv in span.attributes:
        if kv.key == REQUEST_ID_ATTRIBUTE:
            return str(value_of(kv.value))
    return None


class TraceRepair:
    def __init__(self, hold_s: float = 3.0, clock: Callable[[], float] = time.monotonic,
                 max_traces: int = 100_000) -> None:
        self.hold_s = hold_s
        self.clock = clock
        self.max_traces = max_traces
        self._decisions: OrderedDict[bytes, Reparent | str] = OrderedDict()  # Triton trace id → what to do
        self._held: OrderedDict[bytes, _Held] = OrderedDict()
        self.repaired = 0  # Triton traces re-parented
        self.dropped = 0  # spans dropped (unsampled)

    def _decide(self, span: Span) -> None:
        if span.trace_id in self._decisions:
            return
        request_id = _request_id(span)
        if request_id is None:
            return
        carried = context_from_request_id(request_id)
        decision: Reparent | str
        if carried is None:
            decision = _KEEP  # a caller that sent no context (a direct client): Triton's trace is its own
        elif not carried.sampled:
            decision = _DROP
        elif span.trace_id.hex() == carried.trace_id:
            decision = _KEEP  # adopted: already in the caller's trace
        else:
            decision = Reparent(bytes.fromhex(carried.trace_id), bytes.fromhex(carried.span_id))
            self.repaired += 1
        self._decisions[span.trace_id] = decision
        while len(self._decisions) > self.max_traces:
            self._decisions.popitem(last=False)

    def _apply(self, item: Item, out: list[Item]) -> None:
        decision = self._decisions.get(item[2].trace_id, _KEEP)
        if decision == _DROP:
            self.dropped += 1
            return
        if isinstance(decision, Reparent):
            span = item[2]
            original = span.trace_id.hex()
            span.trace_id = decision.trace_id
            if not span.parent_span_id:
                span.parent_span_id = decision.parent_span_id
                span.attributes.append(string_attribute("sluice.repaired_from_trace", original))
        out.append(item)

    def feed(self, items: list[Item]) -> list[Item]:
        """Takes newly received spans; returns those ready to store and forward (repaired where needed)."""
        for item in items:
            if is_triton(item):
                self._decide(item[2])
        out: list[Item] = []
        now = self.clock()
        for item in items:
            trace_id = item[2].trace_id
            if not is_triton(item) or trace_id in self._decisions:
                self._apply(item, out)
            else:
                self._held.setdefault(trace_id, _Held(now)).items.append(item)
        for trace_id in [t for t in self._held if t in self._decisions]:
            for item in self._held.pop(trace_id).items:
                self._apply(item, out)
        while len(self._held) > self.max_traces:
            _, held = self._held.popitem(last=False)
            out.extend(held.items)
        return out

    def expire(self, force: bool = False) -> list[Item]:
        """Releases, unrepaired, held spans whose request-id span never came within `hold_s` (all if `force`)."""
        horizon = self.clock() - self.hold_s
        out: list[Item] = []
        for trace_id in [t for t, held in self._held.items() if force or held.since <= horizon]:
            out.extend(self._held.pop(trace_id).items)
        return out

    @property
    def held(self) -> int:
        return sum(len(h.items) for h in self._held.values())
