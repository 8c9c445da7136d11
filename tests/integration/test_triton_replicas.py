"""Two real Triton replicas behind the orchestrator's replica routing: requests sharing a system prompt meet on one
replica (its engine's prefix-hit counter climbs, the other's does not), and with that replica SIGKILLed the same
requests are served by the other one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.bench.proc_memory import children_by_parent
from services.common.settings import Settings
from services.orchestrator.replicas import ReplicaPolicy
from services.orchestrator.replicated_llm import ReplicatedLLM
from services.orchestrator.triton_llm import LLMParams
from services.retrieval.embedding_client import EmbeddingClient
from services.safety.classifier_client import TritonClassifier
from services.supervisor.processes import PortInUseError, pid_alive
from services.supervisor.replicas import TritonReplicas
from tests.conftest import stack_settings

AFFINITY_TOKENS = ReplicaPolicy().affinity_blocks * ReplicaPolicy().kv_block_size  # the prompt start keying a replica

SYSTEM = ("You are the harbour master of a quiet village by the ocean. Answer questions about boats, tides, the "
          "market and the weather in a calm and friendly voice, and keep every answer short and simple.")
QUESTIONS = ["When is the market open?", "Is the water calm today?", "Where can I buy bread?",
             "What time is high tide?", "Can I take a boat out?", "Is there a library in the village?"]
HITS = "sluice_engine_prefix_hit_tokens_total"


def prefix_hits(settings: Settings, replica: int) -> float:
    metrics_port = settings.triton_replica_ports(replica)[2]
    text = httpx.get(f"http://{settings.host}:{metrics_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(HITS) and 'model="tensorrt_llm"' in line)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, TritonReplicas]]:
    for _ in range(5):  # replica 1's ports are replica 0's + 100: try again if one of them is taken
        settings = stack_settings(Path(tmp_path_factory.mktemp("replicas"))).replace(triton_replicas=2,
                                                                                    kv_cache_mb=32)
        try:
            running = TritonReplicas(settings).start()
            break
        except PortInUseError:
            continue
    else:
        pytest.fail("no free ports for two Triton replicas")
    try:
        yield settings, running
    finally:
        running.stop()


async def ask_all(settings: Settings, demo_tokenizer, questions: list[str]) -> tuple[list[int], dict[str, int]]:
    """Sends each question (after the shared system prompt) in turn; returns the tokens each answer had and how many
    requests each replica was sent."""
    llm = ReplicatedLLM(settings.triton_grpc_urls)
    params = LLMParams(max_tokens=4, end_id=demo_tokenizer.eos_token_id, temperature=0.0, top_k=1)
    answers = []
    try:
        for i, question in enumerate(questions):
            ids = demo_tokenizer.encode_chat([{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": question}])
            answers.append(sum([len(c.token_ids) async for c in llm.stream(f"replica-test-{i}", ids, params)]))
        return answers, {r.name: r.started for r in llm.selector.replicas}
    finally:
        await llm.close()


def test_shared_prefix_lands_on_one_replica_and_survives_its_death(replicas, demo_tokenizer) -> None:
    settings, running = replicas
    assert len(demo_tokenizer.encode(SYSTEM)) > AFFINITY_TOKENS  # the affinity key lies inside the system prompt
    before = [prefix_hits(settings, i) for i in range(2)]
    answers, sent = asyncio.run(ask_all(settings, demo_tokenizer, QUESTIONS))
    assert all(answers)
    gained = [prefix_hits(settings, i) - before[i] for i in range(2)]
    chosen = 0 if gained[0] > 0 else 1
    assert sent[settings.triton_grpc_urls[chosen]] == len(QUESTIONS)
    assert gained[1 - chosen] == 0
    assert gained[chosen] >= (len(QUESTIONS) - 1) * AFFINITY_TOKENS  # every request after the first reused the prefix

    stubs = children_by_parent().get(running.processes[chosen].pid, [])  # its models' Python-backend stubs
    assert len(stubs) >= 4
    running.processes[chosen].popen.kill()  # SIGKILL: no goodbye, connections refused from now on
    running.processes[chosen].popen.wait(10)
    survivor_before = prefix_hits(settings, 1 - chosen)
    answers, sent = asyncio.run(ask_all(settings, demo_tokenizer, QUESTIONS[:3]))
    assert all(answers)
    assert sent[settings.triton_grpc_urls[1 - chosen]] == 3
    assert sent[settings.triton_grpc_urls[chosen]] == 1  # refused once, then marked down: no further attempts
    assert prefix_hits(settings, 1 - chosen) > survivor_before  # the prefix is now cached on the survivor

    # The other models the platform calls on Triton (safety classifier, embedder) fail over too, dead replica first.
    dead_first = [settings.triton_grpc_urls[chosen], settings.triton_grpc_urls[1 - chosen]]
    scores, embeddings = asyncio.run(classify_and_embed(dead_first))
    assert len(scores) == 1 and embeddings.vectors.shape == (2, 384)
    # and none of the dead server's stubs lives on holding its model (each watches its server: engine/stub_lifetime.py)
    deadline = time.monotonic() + 10
    while any(map(pid_alive, stubs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in stubs if pid_alive(pid)], "a stub outlived its tritonserver"


async def classify_and_embed(urls: list[str]):
    classifier, embedder = TritonClassifier(urls), EmbeddingClient(urls)
    try:
        return await classifier.scores(["a calm day at the harbour"]), await embedder.embed(["boats", "tides"])
    finally:
        await classifier.close()
        await embedder.close()
