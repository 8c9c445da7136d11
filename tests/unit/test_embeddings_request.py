"""/v1/embeddings request validation and response encoding (no processes)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from services.common.errors import ApiError
from services.orchestrator.embeddings import embeddings_payload, parse_embeddings_request

MODEL = "all-MiniLM-L6-v2"


def test_a_string_or_a_list_of_strings() -> None:
    assert parse_embeddings_request({"model": MODEL, "input": "hi"}).texts == ["hi"]
    parsed = parse_embeddings_request({"model": MODEL, "input": ["a", "b"], "encoding_format": "base64",
                                       "dimensions": 384})
    assert parsed.texts == ["a", "b"] and parsed.encoding_format == "base64"


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "gpt-x", "input": "hi"}, 404, "model"),
    ({"input": "hi"}, 400, "model"),
    ({"model": MODEL, "input": [[1, 2, 3]]}, 400, "input"),
    ({"model": MODEL, "input": [1, 2, 3]}, 400, "input"),
    ({"model": MODEL, "input": []}, 400, "input"),
    ({"model": MODEL, "input": ""}, 400, "input"),
    ({"model": MODEL, "input": "hi", "dimensions": 256}, 400, "dimensions"),
    ({"model": MODEL, "input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": MODEL, "input": "hi", "temperature": 1}, 400, "temperature"),
])
def test_invalid_requests_get_openai_errors(body: dict, status: int, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_embeddings_request(body)
    assert caught.value.status == status and caught.value.param == param


def test_base64_is_little_endian_float32_of_the_same_values() -> None:
    vectors = np.random.default_rng(0).standard_normal((2, 384)).astype(np.float32)
    floats = embeddings_payload(vectors, np.array([3, 4]), "float")
    packed = embeddings_payload(vectors, np.array([3, 4]), "base64")
    decoded = np.frombuffer(base64.b64decode(packed["data"][1]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, np.asarray(floats["data"][1]["embedding"], dtype=np.float32))
    assert floats["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert [d["index"] for d in floats["data"]] == [0, 1]
