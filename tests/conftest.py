"""Shared fixtures. The `stack` fixture runs the real thing: tritonserver (CPU), the orchestrator and Envoy, on free
ports in a temporary run directory, serving the committed demo model."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import REPO_ROOT, Settings

# SLUICE_TEST_MODEL_DIR lets a developer point the suite at another checkpoint; CI uses the committed demo model.
DEMO_MODEL = Path(os.environ.get("SLUICE_TEST_MODEL_DIR") or REPO_ROOT / "models" / "sluice-demo")


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def stack_settings(run_dir: Path, model_dir: Path = DEMO_MODEL) -> Settings:
    (http, admin, orchestrator, t_http, t_grpc, t_metrics, retrieval, safety, otlp_grpc, otlp_http,
     orchestrator_metrics, safety_metrics, retrieval_metrics) = free_ports(13)
    return Settings(http_port=http, envoy_admin_port=admin, orchestrator_port=orchestrator, triton_http_port=t_http,
                    triton_grpc_port=t_grpc, triton_metrics_port=t_metrics, retrieval_port=retrieval, run_dir=run_dir,
                    model_dir=model_dir, safety_port=safety, otlp_grpc_port=otlp_grpc, otlp_http_port=otlp_http,
                    orchestrator_metrics_port=orchestrator_metrics, safety_metrics_port=safety_metrics,
                    retrieval_metrics_port=retrieval_metrics)


def engine_metric(stack: Settings, name: str, labels: str = "") -> float:
    """The sum of a Triton engine metric's samples whose line contains `labels`."""
    import httpx

    text = httpx.get(f"http://{stack.host}:{stack.triton_metrics_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and labels in line)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from services.supervisor.stack import Stack

    settings = stack_settings(tmp_path_factory.mktemp("stack"))
    running = Stack(settings, shutdown_grace=5.0)
    running.start()
    try:
        yield settings
    finally:
        running.stop()


@pytest.fixture(scope="session")
def demo_tokenizer():
    from engine.tokenizer import ChatTokenizer

    return ChatTokenizer.from_pretrained(DEMO_MODEL)


@pytest.fixture(scope="session")
def tenant_keys(stack: Settings):
    """Creates an API key for a tenant (the tenant too, on first use): `tenant_keys("acme", "free")`."""
    from services.common.db import create_db_engine
    from services.orchestrator.tenancy.store import TenantStore

    engine = create_db_engine(stack.db_url)
    store = TenantStore(engine)

    def create(tenant: str, tier: str | None = None, **limits: int) -> str:
        from services.orchestrator.tenancy.tiers import Limits

        return store.create_key(tenant, tier=tier, name="tests", limits=Limits(**limits)).plaintext

    yield create
    engine.dispose()


@pytest.fixture(scope="session")
def api_key(tenant_keys) -> str:
    """An enterprise-tier key of the tenant `test`: what clients send as `Authorization: Bearer <key>` (HTTP) or
    `authorization` metadata (native gRPC)."""
    return tenant_keys("test", "enterprise")
