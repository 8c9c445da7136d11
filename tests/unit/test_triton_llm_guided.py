"""The orchestrator's side of the guided-decoding / log-prob contract: what build_inputs sends and how a response's
log-prob tensors become an LLMChunk."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from tritonclient.grpc import service_pb2

from services.orchestrator.triton_llm import LLMParams, TritonLLM, build_inputs


def _names(params: LLMParams) -> dict:
    return {tensor.name(): tensor for tensor in build_inputs([1, 2], params)}


def test_nothing_new_is_sent_unless_asked() -> None:
    names = _names(LLMParams(max_tokens=4, end_id=2))
    assert not {"guided_decoding_guide_type", "guided_decoding_guide", "return_log_probs",
                "num_top_log_probs"} & set(names)


def test_guide_and_log_probs_use_trtllm_names_and_types() -> None:
    names = _names(LLMParams(max_tokens=4, end_id=2, guide_type="regex", guide="[0-9]+", logprobs=True, top_logprobs=3))
    assert names["guided_decoding_guide_type"].datatype() == "BYTES"
    assert names["guided_decoding_guide"].datatype() == "BYTES"
    assert names["return_log_probs"].datatype() == "BOOL"
    assert names["num_top_log_probs"].datatype() == "INT32"
    # k = 0: the extension is not used
    assert "num_top_log_probs" not in _names(LLMParams(max_tokens=4, end_id=2, logprobs=True))


def _response(tensors: dict[str, np.ndarray]) -> SimpleNamespace:
    response = service_pb2.ModelInferResponse()
    for name, value in tensors.items():
        output = response.outputs.add()
        output.name, output.datatype = name, {np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}[value.dtype]
        output.shape.extend(value.shape)
        response.raw_output_contents.append(value.tobytes())
    return SimpleNamespace(get_response=lambda: response)


def test_chunk_carries_per_token_log_probs_and_top_pairs() -> None:
    llm = TritonLLM.__new__(TritonLLM)
    llm.kv_block_size = 16
    result = _response({
        "output_ids": np.array([[[5, 9]]], dtype=np.int32),
        "sequence_length": np.array([[2]], dtype=np.int32),
        "output_log_probs": np.array([[[-0.5, -1.25]]], dtype=np.float32),
        "output_top_log_probs": np.array([[[[-0.5, -2.0], [-0.75, -1.25]]]], dtype=np.float32),
        "output_top_log_prob_ids": np.array([[[[5, 7], [3, 9]]]], dtype=np.int32),
    })
    chunk = llm._chunk(result)
    assert chunk is not None and chunk.token_ids == [5, 9]
    assert chunk.logprobs == [-0.5, -1.25]
    assert chunk.top_logprobs == [[(5, -0.5), (7, -2.0)], [(3, -0.75), (9, -1.25)]]
    plain = llm._chunk(_response({"output_ids": np.array([[[5]]], dtype=np.int32),
                                  "sequence_length": np.array([[1]], dtype=np.int32)}))
    assert plain is not None and plain.logprobs is None and plain.top_logprobs is None
