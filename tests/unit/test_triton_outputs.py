"""The LLM client reads each streamed response's INT32 outputs straight from the proto, as tritonclient would."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.grpc._infer_result import InferResult

from services.orchestrator.triton_llm import TritonLLM, int32_outputs


def _response(**tensors: np.ndarray) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="tensorrt_llm")
    for name, array in tensors.items():
        datatype = "INT32" if array.dtype == np.int32 else "FP32"
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(array.tobytes())
    return response


def test_int32_outputs_match_tritonclients_as_numpy() -> None:
    response = _response(output_ids=np.array([[[17, 4, 99]]], dtype=np.int32),
                         sequence_length=np.array([[2]], dtype=np.int32),
                         scores=np.array([0.5], dtype=np.float32),
                         kv_cache_reused_blocks=np.array([3], dtype=np.int32))
    found = int32_outputs(response)
    assert set(found) == {"output_ids", "sequence_length", "kv_cache_reused_blocks"}  # only INT32 tensors
    reference = InferResult(response)
    for name, array in found.items():
        assert array.tolist() == reference.as_numpy(name).reshape(-1).tolist()


def test_a_streamed_response_becomes_the_tokens_within_its_length() -> None:
    llm = TritonLLM.__new__(TritonLLM)  # no client: only the response parsing is under test
    llm.kv_block_size = 16
    chunk = llm._chunk(InferResult(_response(output_ids=np.array([[[5, 6, 7]]], dtype=np.int32),
                                             sequence_length=np.array([[2]], dtype=np.int32),
                                             kv_cache_reused_blocks=np.array([2], dtype=np.int32))))
    assert chunk is not None and chunk.token_ids == [5, 6] and chunk.cached_prompt_tokens == 32
    empty = InferResult(_response(output_ids=np.zeros((1, 1, 0), dtype=np.int32),
                                  sequence_length=np.array([[0]], dtype=np.int32)))
    assert llm._chunk(empty) is None


class _QueuedStream:
    """A Triton client whose stream has every response ready at once (they queued while the caller was busy)."""

    def __init__(self, steps: list[list[int]]) -> None:
        self.steps = steps
        self.stops = 0

    def stream_infer(self, requests, headers=None):
        async def responses():
            async for request in requests:
                if "stop" in [i.name() for i in request["inputs"]]:
                    self.stops += 1
                    return
            for ids in self.steps:
                yield InferResult(_response(output_ids=np.array([[ids]], dtype=np.int32),
                                            sequence_length=np.array([[len(ids)]], dtype=np.int32))), None
        return responses()


async def _read(llm: TritonLLM, stop_after: int | None = None) -> tuple[list[list[int]], int]:
    from services.orchestrator.triton_llm import LLMParams, TokenTally

    tally = TokenTally()
    chunks: list[list[int]] = []
    stream = llm.stream("r1", [1, 2, 3], LLMParams(max_tokens=8, end_id=2), tally=tally)
    async for chunk in stream:
        chunks.append(chunk.token_ids)
        if stop_after is not None and len(chunks) >= stop_after:
            break
    await stream.aclose()
    return chunks, tally.received


def test_responses_that_queued_up_reach_the_caller_as_one_chunk_in_order() -> None:
    import asyncio

    llm = TritonLLM.__new__(TritonLLM)
    llm.kv_block_size, llm.model_name = 16, "tensorrt_llm"
    llm._client = client = _QueuedStream([[10], [11], [12, 13], [14]])
    chunks, received = asyncio.run(_read(llm))
    assert [t for c in chunks for t in c] == [10, 11, 12, 13, 14]
    assert len(chunks) < 4 and received == 5
    # The caller stops right after the last tokens, with the stream's end already taken off the queue: the request
    # has finished in the engine, so no stop request is sent (and nothing waits for an end that was consumed).
    llm._client = client = _QueuedStream([[10], [11]])
    chunks, received = asyncio.run(_read(llm, stop_after=1))
    assert chunks == [[10, 11]] and received == 2 and client.stops == 0
