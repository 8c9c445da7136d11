"""`sluice up` with SLUICE_TRITON_REPLICAS=2: the supervisor runs two tritonservers, the orchestrator routes chat
requests that share a system prompt to one of them (its prefix cache serves the repeats), exports each replica's
state, and keeps answering when that replica is SIGKILLed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.settings import Settings
from services.orchestrator.replicas import ReplicaPolicy
from services.supervisor.processes import PortInUseError
from services.supervisor.stack import Stack
from tests.conftest import stack_settings

AFFINITY_TOKENS = ReplicaPolicy().affinity_blocks * ReplicaPolicy().kv_block_size

SYSTEM = ("You are the harbour master of a quiet village by the ocean. Answer questions about boats, tides, the "
          "market and the weather in a calm and friendly voice, and keep every answer short and simple.")


@pytest.fixture(scope="module")
def replicated_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Stack, str]]:
    from services.orchestrator.tenancy.dev_key import ensure_dev_key

    for _ in range(5):  # replica 1's ports are replica 0's + 100: try again if one of them is taken
        settings = stack_settings(Path(tmp_path_factory.mktemp("replicated"))).replace(triton_replicas=2)
        stack = Stack(settings, shutdown_grace=3.0)
        try:
            stack.start()
            break
        except PortInUseError:
            continue
    else:
        pytest.fail("no free ports for a stack with two Triton replicas")
    try:
        yield settings, stack, ensure_dev_key(settings)
    finally:
        stack.stop()


def ask(settings: Settings, key: str, question: str) -> dict:
    response = httpx.post(f"{settings.public_base_url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": settings.model_name, "max_tokens": 4, "messages": [
                              {"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]},
                          timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def prefix_hits(settings: Settings, replica: int) -> float:
    port = settings.triton_replica_ports(replica)[2]
    text = httpx.get(f"http://{settings.host}:{port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sluice_engine_prefix_hit_tokens_total") and 'model="tensorrt_llm"' in line)


def test_two_replicas_affinity_and_failover(replicated_stack) -> None:
    settings, stack, key = replicated_stack
    assert [p.name for p in stack.processes if p.name.startswith("triton")] == ["triton", "triton-1"]
    metrics = httpx.get(f"http://{settings.host}:{settings.orchestrator_metrics_port}/metrics", timeout=10).text
    assert sum(line.startswith("sluice_triton_replica_up{") and line.endswith(" 1.0")
               for line in metrics.splitlines()) == 2

    before = [prefix_hits(settings, i) for i in range(2)]
    usages = [ask(settings, key, question)["usage"] for question in ("Is the sea calm?", "When is the market?",
                                                                     "Where are the boats?")]
    assert all(usage["prompt_tokens_details"]["cached_tokens"] >= AFFINITY_TOKENS for usage in usages[1:])
    gained = [prefix_hits(settings, i) - before[i] for i in range(2)]
    holder = 0 if gained[0] > 0 else 1
    assert gained[1 - holder] == 0  # the other replica never saw the prefix

    process = next(p for p in stack.processes if p.name == ("triton" if holder == 0 else "triton-1"))
    process.popen.kill()
    process.popen.wait(10)
    for question in ("Is it windy?", "Can I swim?"):
        assert ask(settings, key, question)["choices"][0]["message"]["content"] is not None
