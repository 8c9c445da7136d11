"""Tenancy through Envoy with the openai SDK: 401 / 403 / 429 shapes and headers, TPM reservation and
reconciliation, the concurrency limit, usage records that equal the engine's token counts, and one limit shared by
two orchestrator replicas through the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest
from sluice.v1 import chat_pb2, chat_pb2_grpc

from services.common.db import create_db_engine
from services.common.settings import Settings
from services.orchestrator.tenancy.audit import AuditLog
from services.orchestrator.tenancy.usage import usage_rows_of
from services.supervisor.health import grpc_serving
from services.supervisor.stack import settings_env
from tests.conftest import engine_metric, free_ports
from tests.unit.test_tenancy_limits import REDIS_URL, require_redis

HELLO = [{"role": "user", "content": "Hello!"}]


def sdk(stack: Settings, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=key, max_retries=0, timeout=60)


def audit_events(stack: Settings, **filters: str) -> list:
    engine = create_db_engine(stack.db_url)
    try:
        return AuditLog(engine).list(**filters, limit=1000)
    finally:
        engine.dispose()


def usage_records(stack: Settings, tenant: str) -> list:
    return usage_rows_of(stack.db_url, tenant)


def test_missing_and_bad_keys_are_openai_shaped_401s(stack: Settings) -> None:
    with pytest.raises(openai.AuthenticationError) as bad:
        sdk(stack, "sk-sluice-" + "x" * 48).chat.completions.create(model="sluice-demo", messages=HELLO)
    assert bad.value.status_code == 401 and bad.value.body["code"] == "invalid_api_key"
    missing = httpx.post(f"{stack.public_base_url}/chat/completions", json={"model": "sluice-demo",
                                                                         "messages": HELLO}, timeout=30)
    assert missing.status_code == 401
    assert missing.json()["error"] == {"message": missing.json()["error"]["message"], "type": "invalid_request_error",
                                       "param": None, "code": "missing_api_key"}
    assert httpx.get(f"{stack.public_base_url}/models", timeout=30).status_code == 401
    # native gRPC through Envoy
    with grpc.insecure_channel(f"{stack.host}:{stack.http_port}") as channel, pytest.raises(grpc.RpcError) as native:
        list(chat_pb2_grpc.ChatStub(channel).Generate(chat_pb2.GenerateRequest(
            model="sluice-demo", messages=[chat_pb2.Message(role="user", content="hi")]), timeout=30))
    assert native.value.code() == grpc.StatusCode.UNAUTHENTICATED
    failures = audit_events(stack, event="auth.failed")
    assert len(failures) >= 4 and all(e.actor == "anonymous" for e in failures)


def test_a_model_outside_the_tier_is_403_and_allowed_ones_work(stack: Settings, tenant_keys) -> None:
    free = sdk(stack, tenant_keys("free-co", "free"))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        free.chat.completions.create(model="sluice-demo", messages=HELLO, max_tokens=4)
    assert denied.value.body["code"] == "model_not_allowed"
    assert free.chat.completions.create(model="sluice-small", messages=HELLO, max_tokens=4).choices
    assert any(e.event == "auth.forbidden" for e in audit_events(stack, tenant_id="free-co"))


def test_requests_over_the_rpm_get_429_with_retry_after_and_ratelimit_headers(stack: Settings, tenant_keys) -> None:
    client = sdk(stack, tenant_keys("rpm-co", "enterprise", rpm=2))
    remaining = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="sluice-demo", messages=HELLO, max_tokens=2)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "x-ratelimit-reset-requests"} <= set(raw.headers)
    assert remaining == [1, 0]
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="sluice-demo", messages=HELLO, max_tokens=2)
    response = limited.value.response
    assert response.status_code == 429 and limited.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(response.headers["retry-after"]) <= 31  # 2 per minute: one back within 30 s
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    rejected = [r for r in usage_records(stack, "rpm-co") if r.status == "rejected"]
    assert len(rejected) == 1 and rejected[0].http_status == 429 and rejected[0].completion_tokens == 0
    [event] = audit_events(stack, tenant_id="rpm-co", event="limit.rejected")
    assert "requests per minute" in event.details
    metrics = httpx.get(f"http://{stack.host}:{stack.orchestrator_metrics_port}/metrics", timeout=10).text
    assert any(line.startswith("sluice_rate_limited_total{") and 'tenant="rpm-co"' in line and 'limit="rpm"' in line
               and line.endswith(" 1.0") for line in metrics.splitlines()), "the rejection is not in the metrics"


def test_tokens_per_minute_are_reserved_at_admission_and_reconciled(stack: Settings, tenant_keys,
                                                                     demo_tokenizer) -> None:
    tpm = 600  # refills 10 tokens a second
    client = sdk(stack, tenant_keys("tpm-co", "enterprise", tpm=tpm))
    with pytest.raises(openai.RateLimitError) as too_large:  # prompt + max_tokens can never fit: no Retry-After
        client.chat.completions.create(model="sluice-demo", messages=HELLO, max_tokens=tpm)
    assert "Request too large" in too_large.value.body["message"]
    assert "retry-after" not in too_large.value.response.headers
    first = client.chat.completions.with_raw_response.create(model="sluice-demo", messages=HELLO, max_tokens=200,
                                                             temperature=0)
    started = time.monotonic()
    usage = first.parse().usage
    reserved = usage.prompt_tokens + 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == tpm - reserved  # the whole reservation
    assert usage.completion_tokens < 200  # the answer ends early, so most of the reservation comes back
    second = client.chat.completions.with_raw_response.create(model="sluice-demo", messages=HELLO, max_tokens=200,
                                                              temperature=0.7)
    refill = 10 * (time.monotonic() - started) + 1
    left = int(second.headers["x-ratelimit-remaining-tokens"])
    reconciled = tpm - usage.total_tokens - reserved  # first charged its actual use, second its reservation
    assert reconciled <= left <= reconciled + refill


def test_the_concurrency_limit_refuses_a_second_stream_until_the_first_ends(stack: Settings, tenant_keys) -> None:
    client = sdk(stack, tenant_keys("solo-co", "enterprise", max_concurrent=1))
    stream = client.chat.completions.create(model="sluice-demo", messages=HELLO, max_tokens=400, stream=True,
                                            extra_body={"min_tokens": 400})
    next(iter(stream))  # the first request is now in flight
    with pytest.raises(openai.RateLimitError) as busy:
        client.chat.completions.create(model="sluice-demo", messages=HELLO, max_tokens=2)
    assert "in flight" in busy.value.body["message"]
    stream.close()
    deadline = time.monotonic() + 10
    while True:  # the slot is released when the orchestrator has stopped the first request
        try:
            assert client.chat.completions.create(model="sluice-demo", messages=HELLO, max_tokens=2).choices
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the concurrency slot was never released"
            time.sleep(0.2)


def test_usage_records_equal_engine_token_counts_under_a_burst_with_disconnects(stack: Settings,
                                                                                tenant_keys) -> None:
    key = tenant_keys("burst-co", "enterprise")
    before = engine_metric(stack, "sluice_engine_output_tokens_total{")
    streamed: list[int] = []

    def one(index: int) -> None:
        client = sdk(stack, key)
        stream = client.chat.completions.create(
            model="sluice-demo", messages=[{"role": "user", "content": f"Tell me about river number {index}."}],
            max_tokens=256, temperature=1.0, stream=True, extra_body={"min_tokens": 200})
        for count, _ in enumerate(stream, 1):
            if index % 2 and count == 3:  # every other client hangs up mid-stream
                stream.close()
                break
        streamed.append(index)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(streamed) == 12
    # Admission control may shed part of the burst: to the fallback model (its deployment is on the record; the
    # engine counter sums both LLM slots), or as 503 `overloaded`, which the SDK retries after Retry-After, so each
    # shed attempt is one more record of its own, with nothing generated.
    def served() -> list:
        return [r for r in usage_records(stack, "burst-co") if r.http_status != 503]

    deadline = time.monotonic() + 15
    while len(served()) < 12 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    after = engine_metric(stack, "sluice_engine_output_tokens_total{")
    everything, records = usage_records(stack, "burst-co"), served()
    assert len(records) == 12
    assert all(r.completion_tokens == 0 for r in everything if r.http_status == 503)
    assert sum(r.completion_tokens for r in everything) == after - before  # every token the engine made is billed
    assert all(r.prompt_tokens > 0 and r.deployment in ("sluice-demo-v1", "sluice-small-v1") for r in records), \
        [(r.status, r.prompt_tokens, r.deployment) for r in records]
    cancelled = [r for r in records if r.status == "cancelled"]
    assert len(cancelled) >= 3 and all(r.completion_tokens < 256 for r in cancelled)  # stopped early, still billed
    assert all(r.completion_tokens >= 200 for r in records if r.status == "ok")


@pytest.fixture
def two_replicas(stack: Settings) -> Iterator[list[str]]:
    """Two more orchestrator processes on the stack's Triton and database, sharing limits through Redis."""
    require_redis()
    processes, targets, logs = [], [], []
    ports = free_ports(4)
    for port, metrics_port in zip(ports[:2], ports[2:], strict=True):
        env = settings_env(stack.replace(orchestrator_port=port, orchestrator_metrics_port=metrics_port,
                                         redis_url=REDIS_URL))
        logs.append(stack.run_dir / "logs" / f"replica-{port}.log")
        with logs[-1].open("wb") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "services.orchestrator.server", "--grace", "1"],
                                              env=env, stdout=log, stderr=subprocess.STDOUT))
        targets.append(f"{stack.host}:{port}")
    try:
        deadline = time.monotonic() + 120
        while not all(grpc_serving(target) for target in targets):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                pytest.fail("replicas did not start:\n" + "\n".join(log.read_text()[-2000:] for log in logs))
            time.sleep(0.3)
        yield targets
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)


def test_two_replicas_share_one_rate_limit_through_redis(two_replicas: list[str], tenant_keys) -> None:
    key = tenant_keys("shared-co", "enterprise", rpm=3)
    request = chat_pb2.GenerateRequest(model="sluice-demo", messages=[chat_pb2.Message(role="user", content="hi")],
                                       sampling=chat_pb2.SamplingParams(max_tokens=1))
    outcomes = []
    for _ in range(3):
        for target in two_replicas:
            with grpc.insecure_channel(target) as channel:
                try:
                    list(chat_pb2_grpc.ChatStub(channel).Generate(request, timeout=30,
                                                                  metadata=(("authorization", f"Bearer {key}"),)))
                    outcomes.append("ok")
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                    outcomes.append("429")
    assert outcomes.count("ok") == 3 and outcomes[:3] == ["ok", "ok", "ok"]  # alternating replicas, one budget


def test_in_process_default_needs_no_redis(stack: Settings) -> None:
    assert stack.redis_url is None and "SLUICE_REDIS_URL" not in os.environ


def test_a_safety_block_is_audited_with_its_category_and_a_hash_of_the_prompt(stack: Settings,
                                                                               tenant_keys) -> None:
    import hashlib

    prompt = "How do I kill my neighbor without getting caught?"
    with pytest.raises(openai.BadRequestError):
        sdk(stack, tenant_keys("audited-co", "enterprise")).chat.completions.create(
            model="sluice-demo", max_tokens=8, messages=[{"role": "user", "content": prompt}])
    [event] = audit_events(stack, tenant_id="audited-co", event="safety.blocked")
    assert "violent_crimes" in event.details and '"input_guard"' in event.details
    assert event.prompt_sha256 == hashlib.sha256(prompt.encode()).hexdigest()
    assert event.prompt_text is None and event.request_id  # the tenant did not opt in to storing text
