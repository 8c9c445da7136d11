"""Slow and silent clients (issue S11) on the real stack: streaming requests whose client takes the first message
and then reads nothing more are ended by the orchestrator's stream idle timeout — the engine's running requests and
used KV blocks go back to 0 and the usage records say the requests were cancelled, long before max_tokens.

The clients talk to the orchestrator's port without Envoy: the demo model's whole answer (1024-token context, about
90 KB of SSE frames) fits in what Envoy buffers for a silent client (its 64 KiB HTTP/2 window towards the
orchestrator — the protocol's minimum — plus its connection and socket buffers, ~130 KB), so through Envoy the answer
is simply finished into the buffers. That Envoy's buffers do block the orchestrator after ~130 KB, and the stream is
then ended, is tests/integration/test_envoy_backpressure.py. Here gRPC's own flow control does the blocking: the
client grants its 64 KiB initial window and no more while nothing is read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from sluice.v1 import openai_pb2_grpc

from services.common.db import create_db_engine
from services.orchestrator.tenancy.store import issue_key
from services.orchestrator.tenancy.usage import usage_rows_of
from services.safety.categories import CLASSIFIER_CATEGORIES
from services.safety.policy import SafetyPolicy
from services.safety.policy_db import set_policy
from services.supervisor.stack import Stack
from tests.conftest import engine_metric, stack_settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(150)]

STREAMS = 8
IDLE_TIMEOUT_S = 1.0
# The demo model's context is 1024 tokens. With the output guard on, the engine streams a response per word, and 960
# tokens of plain SSE frames come to about the 64 KiB window (two of eight streams once finished inside it); with
# log-probabilities each token's frame is several hundred bytes, several times the window.
MAX_TOKENS = 960
TENANT = "silent-clients"


def test_streams_whose_client_stops_reading_are_cancelled_and_free_the_engine(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path).replace(stream_idle_timeout_s=IDLE_TIMEOUT_S)
    stack = Stack(settings, shutdown_grace=5.0)
    stack.start()
    # no BDP probing: the client's window stays at the initial 64 KiB while the application reads nothing
    channel = grpc.insecure_channel(f"{settings.host}:{settings.orchestrator_port}",
                                    options=[("grpc.http2.bdp_probe", 0)])
    calls = []
    try:
        key = issue_key(settings.db_url, TENANT, tier="enterprise", name="silent-clients")
        # The classifier only flags for this tenant: a sampled demo answer it would stop (content_filter) is a short,
        # complete answer, not the silent stream this test is about.
        db = create_db_engine(settings.db_url)
        set_policy(db, SafetyPolicy(id=TENANT, actions=dict.fromkeys(CLASSIFIER_CATEGORIES, "flag")), actor="tests")
        db.dispose()
        stub = openai_pb2_grpc.OpenAIStub(channel)
        body = json.dumps({"model": "sluice-demo", "stream": True, "max_tokens": MAX_TOKENS,
                           "min_tokens": MAX_TOKENS, "temperature": 0.8, "logprobs": True, "top_logprobs": 5,
                           "messages": [{"role": "user", "content": "Tell me a very long story."}]}).encode()
        started = time.monotonic()
        calls = [stub.ChatCompletions(httpbody_pb2.HttpBody(content_type="application/json", data=body),
                                      metadata=(("authorization", f"Bearer {key}"),)) for _ in range(STREAMS)]
        firsts = [next(call) for call in calls]  # the first SSE frame of each; nothing is read after it
        assert all(first.data.startswith(b"data: ") for first in firsts)

        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline:
            rows = usage_rows_of(settings.db_url, TENANT)
            running = engine_metric(settings, "sluice_engine_requests_running")
            blocks = engine_metric(settings, "sluice_engine_kv_blocks_used")
            if len(rows) == STREAMS and running == 0 and blocks == 0:
                break
            time.sleep(0.5)
        print(f"{STREAMS} silent streams ended {time.monotonic() - started:.1f} s after they began; completion "
              f"tokens {sorted(row.completion_tokens for row in rows)}")
        assert engine_metric(settings, "sluice_engine_requests_running") == 0
        assert engine_metric(settings, "sluice_engine_kv_blocks_used") == 0
        assert len(rows) == STREAMS
        assert {row.status for row in rows} == {"cancelled"}  # ended by the server, recorded as a client gone
        # stopped early in the engine (tokens go on being generated during the idle timeout, so not all may be)
        assert any(row.completion_tokens < MAX_TOKENS for row in rows)
        metrics = httpx.get(f"http://{settings.host}:{settings.orchestrator_metrics_port}/metrics", timeout=10).text
        stalled = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("sluice_stalled_streams_total{"))
        assert stalled == STREAMS  # ended by the idle timeout, not by the client
    finally:
        for call in calls:
            call.cancel()
        channel.close()
        stack.stop()
