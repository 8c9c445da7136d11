"""Two deployments of different sizes: `auto` routing, and fallback when a deployment is stopped in Triton."""

from __future__ import annotations

import openai
import pytest
import tritonclient.grpc as grpcclient

from services.common.settings import Settings

SMALL, LARGE = "sluice-small", "sluice-demo"
HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)


def test_both_sizes_are_listed_and_served(client: openai.OpenAI) -> None:
    assert {SMALL, LARGE} <= {m.id for m in client.models.list().data}
    for model, deployment in ((SMALL, "sluice-small-v1"), (LARGE, "sluice-demo-v1")):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=8)
        assert raw.headers["x-sluice-deployment"] == deployment
        assert raw.parse().choices[0].message.content


def test_auto_routes_by_prompt_length_and_tier(client: openai.OpenAI, stack: Settings, tenant_keys) -> None:
    plus = openai.OpenAI(base_url=stack.public_base_url, api_key=tenant_keys("auto-plus", "plus"), max_retries=0,
                         timeout=60)
    short = plus.chat.completions.with_raw_response.create(model="auto", messages=HELLO, max_tokens=8)
    assert short.headers["x-sluice-model"] == SMALL and short.headers["x-sluice-route"] == "auto:short"
    assert short.parse().model == SMALL  # the body names the public model that served it, not "auto"
    long_prompt = [{"role": "user", "content": "Please summarise this. " + "The river flows to the sea. " * 40}]
    long = plus.chat.completions.with_raw_response.create(model="auto", messages=long_prompt, max_tokens=8)
    assert long.headers["x-sluice-model"] == LARGE and long.headers["x-sluice-route"] == "auto:long-prompt"
    # the caller's tier steers `auto` too: enterprise (routing.auto.large_tiers) gets the large model for anything
    tiered = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, max_tokens=8)
    assert tiered.headers["x-sluice-model"] == LARGE and tiered.headers["x-sluice-route"] == "auto:tier"


def test_stopped_deployment_falls_back_and_says_so(client: openai.OpenAI, stack: Settings) -> None:
    triton = grpcclient.InferenceServerClient(stack.triton_grpc_url)
    triton.unload_model("tensorrt_llm_small")
    try:
        for stream in (False, True):
            raw = client.chat.completions.with_raw_response.create(model=SMALL, messages=HELLO, max_tokens=8,
                                                                  stream=stream)
            assert raw.headers["x-sluice-model"] == LARGE
            assert raw.headers["x-sluice-fallback"].startswith("sluice-small-v1 (")
            parsed = raw.parse()
            text = ("".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if stream
                    else parsed.choices[0].message.content)
            assert text
    finally:
        triton.load_model("tensorrt_llm_small")
        triton.close()
