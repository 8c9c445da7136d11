"""The real safety and retrieval services killed under a running stack: each stage's failure policy applies
(retrieve fails open with `x-sluice-degraded`, the input guard fails closed with 503 + Retry-After), its circuit
breaker opens, and once the supervisor has restarted the service the circuit closes and requests are whole again."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import httpx
import pytest
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.supervisor.health import grpc_serving
from services.supervisor.processes import wait_until
from services.supervisor.restarts import RestartPolicy
from tests.own_stack import OwnStack, supervised_stack

# The killed service stays down long enough to watch its stage fail and its circuit open (5 failures, pipelines/
# stages.yaml), then comes back.
SLOW_RESTARTS = RestartPolicy(first_delay_s=12.0, max_delay_s=12.0, max_restarts=2, window_s=300.0)
BREAKER_FAILURES = 5


def _circuit(own: OwnStack, name: str) -> float:
    text = httpx.get(f"http://{own.settings.host}:{own.settings.orchestrator_metrics_port}/metrics", timeout=5).text
    line = next(line for line in text.splitlines() if line.startswith(f'sluice_circuit_state{{circuit="{name}"}}'))
    return float(line.rsplit(" ", 1)[1])


def _chat(own: OwnStack, api_key: str, retrieval: bool = False) -> httpx.Response:
    body: dict = {"model": own.settings.model_name, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    if retrieval:
        body["retrieval"] = {"collections": ["handbook"]}
    return httpx.post(f"{own.settings.public_base_url}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {api_key}"})


def _until(check, timeout: float) -> float | None:
    started = time.monotonic()
    if wait_until(check, timeout, interval=0.5):
        return time.monotonic() - started
    return None


@pytest.mark.timeout(600)
def test_stage_services_die_and_come_back(tmp_path: Path) -> None:
    with supervised_stack(tmp_path, restart_policy=SLOW_RESTARTS) as own:
        api_key = own.api_key("stages")
        with grpc.insecure_channel(own.settings.retrieval_url) as channel:  # the tenant's (empty) collection
            retrieval_pb2_grpc.RetrievalStub(channel).CreateCollection(
                retrieval_pb2.CreateCollectionRequest(name="handbook"), metadata=(("x-sluice-tenant", "stages"),),
                timeout=30)
        assert _chat(own, api_key, retrieval=True).status_code == 200

        # retrieval down: the retrieve stage fails open — answers go on, marked degraded — and its circuit opens
        own.kill("retrieval")
        for _ in range(BREAKER_FAILURES + 1):
            reply = _chat(own, api_key, retrieval=True)
            assert reply.status_code == 200 and reply.headers["x-sluice-degraded"] == "retrieve", reply.text
            assert reply.json()["citations"] == []
        assert _circuit(own, "stage:retrieve") == 2.0
        assert wait_until(lambda: grpc_serving(own.settings.retrieval_url), 90)  # restarted by the supervisor
        closed_after = _until(lambda: "x-sluice-degraded" not in _chat(own, api_key, retrieval=True).headers, 60)
        assert closed_after is not None and _circuit(own, "stage:retrieve") == 0.0

        # safety down: the input guard fails closed — 503 with Retry-After, nothing generated — and its circuit opens
        own.kill("safety")
        for _ in range(BREAKER_FAILURES + 1):
            reply = _chat(own, api_key)
            assert reply.status_code == 503 and int(reply.headers["retry-after"]) >= 1, reply.text
            assert reply.json()["error"]["code"] == "service_unavailable"
        assert _circuit(own, "stage:input_guard") == 2.0
        started = time.monotonic()
        reply = _chat(own, api_key)  # an open circuit answers at once, without calling the service
        assert reply.status_code == 503 and time.monotonic() - started < 1.0
        assert wait_until(lambda: grpc_serving(f"{own.settings.host}:{own.settings.safety_port}"), 90)
        recovered_after = _until(lambda: _chat(own, api_key).status_code == 200, 60)
        assert recovered_after is not None and _circuit(own, "stage:input_guard") == 0.0

        assert own.stack.restart_counts["retrieval"] == 1 and own.stack.restart_counts["safety"] == 1
        assert own.gave_up is None
        print(f"\nretrieve circuit closed {closed_after:.1f} s and input guard {recovered_after:.1f} s after their "
              f"services were serving again")
