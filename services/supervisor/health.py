"""Readiness probes for the stack's processes."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def triton_ready(host: str, http_port: int) -> bool:
    return http_ok(f"http://{host}:{http_port}/v2/health/ready")


def envoy_ready(host: str, admin_port: int) -> bool:
    return http_ok(f"http://{host}:{admin_port}/ready")


def grpc_serving(target: str, service: str = "", timeout: float = 1.0) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=timeout)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def drain_envoy(host: str, admin_port: int, timeout: float = 2.0) -> bool:
    """Stops Envoy's listeners at once: no new connections, while open ones (and their streams) carry on."""
    request = urllib.request.Request(f"http://{host}:{admin_port}/drain_listeners", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
