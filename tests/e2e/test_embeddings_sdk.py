"""POST /v1/embeddings with the real OpenAI SDK through Envoy → orchestrator → Triton `embedder`."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from services.common.settings import Settings

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)


def test_listed_in_models(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list().data]
    assert client.models.retrieve(MODEL).id == MODEL


def test_string_and_list_inputs_give_unit_vectors_and_usage(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model=MODEL, input="Hello world", encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens == one.usage.total_tokens == 4  # [CLS] hello world [SEP]
    many = client.embeddings.create(model=MODEL, input=["Hello world", "A cat sat on the mat.", "Dogs bark."],
                                    encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in many.data])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], one.data[0].embedding, atol=1e-5)  # batching changes nothing
    assert many.usage.prompt_tokens == 4 + 9 + 5
    assert vectors[1] @ vectors[2] > vectors[0] @ vectors[2] - 1  # sanity: finite similarities


def test_base64_decodes_to_the_same_floats(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model=MODEL, input=["retrieval", "augmented"], encoding_format="float")
    packed = client.embeddings.create(model=MODEL, input=["retrieval", "augmented"])  # the SDK asks for base64
    for f, p in zip(floats.data, packed.data, strict=True):
        np.testing.assert_allclose(p.embedding, f.embedding, rtol=0, atol=1e-7)


def test_unknown_model_is_404_and_bad_input_is_400(client: openai.OpenAI, stack: Settings, api_key: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert missing.value.body["code"] == "model_not_found"
    for bad in ([[1, 2, 3]], [], ""):
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model=MODEL, input=bad)
        assert caught.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="x", dimensions=128)
    raw = httpx.post(f"{stack.public_base_url}/embeddings", content=b"{not json", timeout=30,
                     headers={"content-type": "application/json", "authorization": f"Bearer {api_key}"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
