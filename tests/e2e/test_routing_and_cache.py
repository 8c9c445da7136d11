"""Routing headers and the response cache, through Envoy with the openai SDK."""

from __future__ import annotations

import time

import openai
import pytest

from services.common.settings import Settings


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)


def test_route_headers_name_model_and_deployment(client: openai.OpenAI, stack: Settings) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=stack.model_name, messages=[{"role": "user", "content": "Hi there"}], max_tokens=4, temperature=0.7)
    assert raw.headers["x-sluice-model"] == stack.model_name
    assert raw.headers["x-sluice-deployment"] and raw.headers["x-sluice-route"] == "explicit"
    assert "x-sluice-cache" not in raw.headers  # sampled without a seed: never cached


@pytest.mark.parametrize("stream", [False, True])
def test_deterministic_repeat_is_a_cache_hit_with_the_same_content(client: openai.OpenAI, stack: Settings,
                                                                    stream: bool) -> None:
    messages = [{"role": "user", "content": f"Tell me about the Sluice cache ({'stream' if stream else 'json'})."}]

    def ask() -> tuple[str, str, float]:
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(
            model=stack.model_name, messages=messages, max_tokens=48, temperature=0, stream=stream,
            extra_body={"min_tokens": 48})
        parsed = raw.parse()
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
        else:
            text = parsed.choices[0].message.content
        return text, raw.headers["x-sluice-cache"], time.monotonic() - started

    first_text, first_status, first_s = ask()
    second_text, second_status, second_s = ask()
    assert (first_status, second_status) == ("miss", "hit")
    assert second_text == first_text and first_text
    print(f"\n[measure] cache {'stream' if stream else 'json'}: miss {first_s * 1000:.0f} ms, "
          f"hit {second_s * 1000:.0f} ms")
    assert second_s < first_s
