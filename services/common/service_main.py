"""What every Sluice gRPC service process does around its server: log setup, `--grace`, and waiting for SIGTERM or
SIGINT before a graceful stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.logging import configure_logging
from services.common.metrics import start_metrics_server
from services.common.settings import Settings
from services.common.telemetry import setup_tracing


def server_options(max_receive_bytes: int) -> list[tuple[str, int]]:
    """Channel arguments of every Sluice gRPC server. SO_REUSEPORT is off: gRPC turns it on by default, and then a
    second server (a leftover process, another stack) binds the same port and the kernel splits new connections
    between the two, so a client reaches a service that is not the one it was configured for. With it off the second
    bind fails at start."""
    return [("grpc.max_receive_message_length", max_receive_bytes), ("grpc.so_reuseport", 0)]


async def start_serving(server: grpc.aio.Server, address: str, service_names: tuple[str, ...], what: str) -> int:
    """Adds health checking and reflection for `service_names`, binds `address` (port 0: any free port), starts the
    server and reports every service SERVING. Returns the bound port."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises "Failed to bind" where older releases returned 0
        raise OSError(f"cannot bind the {what} to {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot bind the {what} to {address}")
    await server.start()
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return port


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _component_of(serve: Callable) -> str:
    """`orchestrator` for services.orchestrator.server (also when run as `python -m`, where it is __main__)."""
    module = sys.modules.get(serve.__module__)
    spec = getattr(module, "__spec__", None)
    name = spec.name if spec is not None else serve.__module__
    parts = name.split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop (libuv) unless SLUICE_UVLOOP=0: a cheaper scheduler under every streamed token."""
    if os.environ.get("SLUICE_UVLOOP", "1") == "0":
        return None
    import uvloop

    return uvloop.new_event_loop


def run_service(description: str, serve: Callable[[Settings, float], Awaitable[None]], *, default_grace: float,
                grace_help: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--grace", type=float, default=default_grace, help=grace_help)
    args = parser.parse_args()
    settings = Settings.from_env()
    component = _component_of(serve)
    configure_logging(component, settings.log_level)  # JSON lines with request, trace and span ids
    tracing = setup_tracing(component, settings)
    if (port := settings.metrics_port(component)) is not None:
        start_metrics_server(port, settings.host)  # Prometheus text at /metrics
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings, args.grace))
    finally:
        tracing.shutdown()  # exports the spans still queued
