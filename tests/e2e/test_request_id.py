"""A client's x-request-id through Envoy: kept verbatim (a plain id and a UUID alike), returned, recorded on the
trace and found by `sluice trace`; an unsafe one is refused with a 400 (Envoy still echoes the header it got)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from services.common.settings import Settings
from services.supervisor.stack import settings_env

pytestmark = pytest.mark.stack


def chat(stack: Settings, key: str, request_id: str) -> httpx.Response:
    return httpx.post(f"{stack.public_base_url}/chat/completions", timeout=60,
                      headers={"authorization": f"Bearer {key}", "x-request-id": request_id},
                      json={"model": stack.model_name, "max_tokens": 4,
                            "messages": [{"role": "user", "content": "Say hi."}]})


@pytest.mark.parametrize("request_id", ["my-req-456", str(uuid.uuid4())])
def test_a_client_request_id_is_kept_returned_and_found_by_sluice_trace(stack: Settings, api_key: str,
                                                                        request_id: str) -> None:
    reply = chat(stack, api_key, request_id)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == request_id
    trace_id = reply.headers["x-sluice-trace-id"]
    deadline, out = time.monotonic() + 30, None
    while time.monotonic() < deadline:  # spans arrive at the receiver in batches
        out = subprocess.run([sys.executable, "-m", "services.cli.main", "trace", request_id],
                             env=settings_env(stack), capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and "/sluice.v1.OpenAI/ChatCompletions" in out.stdout:
            break
        time.sleep(1)
    assert out is not None and out.returncode == 0, out.stderr if out else None
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"trace {trace_id}") and request_id in first


@pytest.mark.parametrize("request_id", ["has spaces", "x" * 129, "semi;colon", "émoji"])
def test_an_unsafe_request_id_is_refused(stack: Settings, api_key: str, request_id: str) -> None:
    try:
        reply = chat(stack, api_key, request_id)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        pytest.skip("the HTTP client itself refuses this header value")
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_request_id"
