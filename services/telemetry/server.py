"""The local OTLP receiver process (`python -m services.telemetry.server`, started by `sluice up`).

OTLP/gRPC on SLUICE_OTLP_GRPC_PORT (the Sluice services and Envoy export here) and OTLP/HTTP on SLUICE_OTLP_HTTP_PORT
(protobuf or JSON; Triton exports JSON here). Spans go through one worker thread: Triton traces are repaired
(services/telemetry/repair.py), then stored in <run dir>/telemetry/spans.db and, when SLUICE_OTLP_ENDPOINT names
another collector, forwarded to it. The HTTP port also serves the query API that `sluice trace` reads:

  GET /api/traces/<trace id | request id>   the spans of one trace (JSON)
  GET /api/traces?limit=N                   the latest traces
  GET /health, GET /metrics                 liveness, Prometheus text
"""

from __future__ import annotations

import gzip
import json
import logging
import queue
import signal
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from services.common.logging import configure_logging
from services.common.service_main import server_options
from services.common.settings import Settings
from services.telemetry.otlp import PayloadError, build_request, decode_json, decode_protobuf, row_of, spans_of
from services.telemetry.repair import Item, TraceRepair
from services.telemetry.store import SpanStore

log = logging.getLogger("sluice.telemetry")

MAX_BODY_BYTES = 32 * 1024 * 1024


class Forwarder:
    """Sends repaired spans on to another OTLP/gRPC collector (best effort: a failed export is logged and dropped)."""

    def __init__(self, endpoint: str) -> None:
        secure = endpoint.startswith("https://")
        target = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
        self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if secure \
            else grpc.insecure_channel(target)
        self.stub = trace_service_pb2_grpc.TraceServiceStub(self.channel)

    def send(self, items: list[Item]) -> None:
        try:
            self.stub.Export(build_request(items), timeout=5)
        except grpc.RpcError as exc:
            log.warning("forwarding %d spans failed: %s", len(items), exc.code().name)

    def close(self) -> None:
        self.channel.close()


class Receiver:
    """Accepts exports from any thread; one worker thread repairs, stores and forwards them in arrival order."""

    def __init__(self, store: SpanStore, repair: TraceRepair | None = None, forwarder: Forwarder | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.repair = repair or TraceRepair()
        self.forwarder = forwarder
        self.registry = registry or CollectorRegistry()
        self._received = Counter("sluice_telemetry_spans_received_total", "Spans received", ["protocol"],
                                 registry=self.registry)
        self._stored = Counter("sluice_telemetry_spans_stored_total", "Spans stored", registry=self.registry)
        Gauge("sluice_telemetry_traces_repaired", "Triton traces re-parented into their caller's trace",
              registry=self.registry).set_function(lambda: self.repair.repaired)
        Gauge("sluice_telemetry_spans_held", "Triton spans waiting for their trace to be resolved",
              registry=self.registry).set_function(lambda: self.repair.held)
        self._queue: queue.Queue[ExportTraceServiceRequest | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="telemetry-worker", daemon=True)
        self._thread.start()

    def submit(self, request: ExportTraceServiceRequest, protocol: str) -> None:
        self._received.labels(protocol).inc(sum(1 for _ in spans_of(request)))
        self._queue.put(request)

    def flush(self) -> None:
        """Waits until everything submitted so far has been stored."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)
        if self.forwarder is not None:
            self.forwarder.close()

    def _emit(self, items: list[Item]) -> None:
        if not items:
            return
        self.store.add([row_of(resource, span) for resource, _, span in items])
        self._stored.inc(len(items))
        if self.forwarder is not None:
            self.forwarder.send(items)

    def _work(self) -> None:
        while True:
            try:
                request = self._queue.get(timeout=0.25)
            except queue.Empty:
                self._emit(self.repair.expire())
                continue
            try:
                if request is None:
                    self._emit(self.repair.expire(force=True))
                    return
                self._emit(self.repair.feed(list(spans_of(request))) + self.repair.expire())
            except Exception:  # one bad batch must not stop the receiver
                log.exception("could not process an export")
            finally:
                self._queue.task_done()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: ExportTraceServiceRequest, context: grpc.ServicerContext):
        self.receiver.submit(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            log.debug("http %s", format % args)

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            self._send(status, json.dumps(payload).encode())

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if urlparse(self.path).path != "/v1/traces":
                self._json(404, {"error": "unknown path"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._json(413, {"error": "body too large"})
                return
            body = self.rfile.read(length)
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                body = gzip.decompress(body)
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            try:
                is_json = content_type == "application/json"
                request = decode_json(body) if is_json else decode_protobuf(body)
            except PayloadError as exc:
                self._json(400, {"error": str(exc)})
                return
            receiver.submit(request, "http")
            if is_json:
                self._json(200, {})
            else:
                self._send(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                           "application/x-protobuf")

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path == "/health":
                self._send(200, b"ok\n", "text/plain")
            elif url.path == "/metrics":
                self._send(200, generate_latest(receiver.registry), "text/plain; version=0.0.4")
            elif url.path == "/api/traces":
                limit = int((parse_qs(url.query).get("limit") or ["20"])[0])
                self._json(200, {"traces": receiver.store.recent(max(1, min(limit, 1000)))})
            elif url.path.startswith("/api/traces/"):
                key = url.path.removeprefix("/api/traces/").strip("/")
                spans = receiver.store.find(key)
                if not spans:
                    self._json(404, {"error": f"no trace found for {key!r}"})
                    return
                payload: dict = {"trace_id": spans[0].trace_id, "spans": [s.as_json() for s in spans]}
                if key != spans[0].trace_id:  # looked up by request id: every trace that request has spans in
                    payload["request_traces"] = receiver.store.trace_ids_for_request(key)
                self._json(200, payload)
            else:
                self._json(404, {"error": "unknown path"})

    return Handler


def start(settings: Settings, store_path: Path | None = None) -> tuple[Receiver, grpc.Server, ThreadingHTTPServer]:
    """Starts the receiver's gRPC and HTTP servers on the settings' OTLP ports."""
    store = SpanStore(store_path or settings.run_dir / "telemetry" / "spans.db")
    forwarder = Forwarder(settings.otlp_endpoint) if settings.otlp_endpoint else None
    receiver = Receiver(store, forwarder=forwarder)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                              options=server_options(MAX_BODY_BYTES))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), grpc_server)
    try:  # SO_REUSEPORT off (server_options): a second receiver on the port fails here
        bound = grpc_server.add_insecure_port(f"{settings.host}:{settings.otlp_grpc_port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind the OTLP/gRPC receiver to port {settings.otlp_grpc_port}")
    grpc_server.start()
    http_server = ThreadingHTTPServer((settings.host, settings.otlp_http_port), _handler(receiver))
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, name="telemetry-http", daemon=True).start()
    return receiver, grpc_server, http_server


def main() -> None:
    settings = Settings.from_env()
    configure_logging("telemetry", settings.log_level)
    receiver, grpc_server, http_server = start(settings)
    log.info("OTLP receiver: grpc %s:%d, http %s:%d%s", settings.host, settings.otlp_grpc_port, settings.host,
             settings.otlp_http_port, f", forwarding to {settings.otlp_endpoint}" if settings.otlp_endpoint else "")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    started = time.monotonic()
    http_server.shutdown()
    grpc_server.stop(2).wait()
    receiver.close()
    receiver.store.close()
    log.info("OTLP receiver stopped in %.1f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
