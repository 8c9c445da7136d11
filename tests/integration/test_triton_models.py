"""The Triton model repository served by a real tritonserver: the LLM slot called directly, and the ensemble."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from engine.streaming import STREAM_WORDS_PARAMETER, WORD_HOLD_TOKENS, word_breaks
from services.common.settings import Settings


@pytest.fixture(scope="module")
def triton(stack: Settings):
    client = grpcclient.InferenceServerClient(stack.triton_grpc_url)
    yield client
    client.close()


def _stream(client: grpcclient.InferenceServerClient, model: str, inputs: list, request_id: str = "",
            parameters: dict | None = None) -> list:
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer(model, inputs, request_id=request_id, enable_empty_final_response=True,
                                  parameters=parameters)
        responses = []
        while True:
            result, error = results.get(timeout=60)
            responses.append((result, error))
            final = result.get_response().parameters.get("triton_final_response") if result else None
            if error is not None or (final is not None and final.bool_param):
                return responses
    finally:
        client.stop_stream()


def _tensor(name: str, value: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def _llm_inputs(prompt: list[int], max_tokens: int, **extra: tuple[np.ndarray, str]) -> list:
    inputs = [
        _tensor("input_ids", np.array([prompt], dtype=np.int32), "INT32"),
        _tensor("input_lengths", np.array([[len(prompt)]], dtype=np.int32), "INT32"),
        _tensor("request_output_len", np.array([[max_tokens]], dtype=np.int32), "INT32"),
        _tensor("streaming", np.array([[True]], dtype=bool), "BOOL"),
        _tensor("exclude_input_in_output", np.array([[True]], dtype=bool), "BOOL"),
    ]
    inputs += [_tensor(name, value, dtype) for name, (value, dtype) in extra.items()]
    return inputs


def _tokens(responses: list) -> list[int]:
    ids: list[int] = []
    for result, error in responses:
        assert error is None, error
        length = int(result.as_numpy("sequence_length").reshape(-1)[0])
        ids += result.as_numpy("output_ids").reshape(-1)[:length].tolist()
    return ids


def test_llm_slot_streams_tokens_and_honours_stop_words(triton, demo_tokenizer) -> None:
    prompt = demo_tokenizer.encode_chat([{"role": "user", "content": "Hello!"}])
    greedy = {"runtime_top_k": (np.array([[1]], dtype=np.int32), "INT32")}
    tokens = _tokens(_stream(triton, "tensorrt_llm", _llm_inputs(prompt, 12, **greedy)))
    assert 0 < len(tokens) <= 12
    stop_at = tokens[2]
    stop_words = np.array([[[stop_at], [1]]], dtype=np.int32)  # TensorRT-LLM layout: ids, then end offsets
    stopped = _tokens(_stream(triton, "tensorrt_llm", _llm_inputs(
        prompt, 12, stop_words_list=(stop_words, "INT32"), **greedy)))
    assert stopped == tokens[: tokens.index(stop_at) + 1]


def _sizes(responses: list) -> list[int]:
    return [int(result.as_numpy("sequence_length").reshape(-1)[0]) for result, _ in responses]


def test_llm_slot_streams_whole_words_when_asked(triton, demo_tokenizer) -> None:
    """With the `sluice_stream_words` request parameter a response ends where a token holds whitespace (after the
    first two tokens, which go out at once); the tokens are the same as token by token."""
    prompt = demo_tokenizer.encode_chat([{"role": "user", "content": "Tell me about the capital of France."}])
    fixed = {"runtime_top_k": (np.array([[1]], dtype=np.int32), "INT32"),
             "min_tokens": (np.array([[48]], dtype=np.int32), "INT32")}
    by_token = _stream(triton, "tensorrt_llm", _llm_inputs(prompt, 48, **fixed))
    by_word = _stream(triton, "tensorrt_llm", _llm_inputs(prompt, 48, **fixed),
                      parameters={STREAM_WORDS_PARAMETER: True})
    tokens = _tokens(by_token)
    assert _tokens(by_word) == tokens and len(tokens) == 48
    assert set(_sizes(by_token)) == {1}  # a lone stream goes token by token
    sizes = _sizes(by_word)
    assert sizes[:2] == [1, 1] and len(sizes) < len(tokens)
    breaks = word_breaks(demo_tokenizer.tokenizer, len(demo_tokenizer.tokenizer.get_vocab()))
    ends = np.cumsum(sizes)
    for start, end in zip(ends[1:-2], ends[2:-1], strict=True):  # every response but the first two and the last
        last = tokens[end - 1]
        assert breaks[last] or end - start == WORD_HOLD_TOKENS, (tokens[start:end], sizes)
        assert not breaks[tokens[start:end - 1]].any()  # no word ended earlier in it: it went out at the first


def test_bad_request_gets_its_own_error(triton, demo_tokenizer) -> None:
    inputs = _llm_inputs([1, 2, 3], 4)
    inputs[1] = _tensor("input_lengths", np.array([[99]], dtype=np.int32), "INT32")
    responses = _stream(triton, "tensorrt_llm", inputs)
    assert responses[-1][1] is not None and "input_lengths" in str(responses[-1][1])
    prompt = demo_tokenizer.encode_chat([{"role": "user", "content": "Hello!"}])
    assert _tokens(_stream(triton, "tensorrt_llm", _llm_inputs(prompt, 4)))  # the model still serves


def test_ensemble_text_in_text_out(triton, demo_tokenizer) -> None:
    messages = '[{"role": "user", "content": "Hello!"}]'
    inputs = [
        _tensor("text_input", np.array([[messages.encode()]], dtype=object), "BYTES"),
        _tensor("max_tokens", np.array([[24]], dtype=np.int32), "INT32"),
        _tensor("top_k", np.array([[1]], dtype=np.int32), "INT32"),
        _tensor("stream", np.array([[True]], dtype=bool), "BOOL"),
        _tensor("apply_chat_template", np.array([[True]], dtype=bool), "BOOL"),
    ]
    responses = _stream(triton, "ensemble", inputs, request_id="ensemble-test-1")
    pieces = [r.as_numpy("text_output").reshape(-1)[0].decode() for r, e in responses if r is not None and
              r.as_numpy("text_output") is not None]
    assert all(e is None for _, e in responses)
    text = "".join(pieces)
    # the same prompt through the LLM slot directly, decoded in one go, gives the same text
    prompt = demo_tokenizer.encode_chat([{"role": "user", "content": "Hello!"}])
    greedy = {"runtime_top_k": (np.array([[1]], dtype=np.int32), "INT32"),
              "end_id": (np.array([[demo_tokenizer.eos_token_id]], dtype=np.int32), "INT32")}
    direct = _tokens(_stream(triton, "tensorrt_llm", _llm_inputs(prompt, 24, **greedy)))
    assert text == demo_tokenizer.decode(direct)
    assert len(pieces) > 1  # streamed piece by piece


def test_llm_slot_guided_decoding_and_log_probs(triton, demo_tokenizer) -> None:
    """TensorRT-LLM's guided-decoding and log-prob tensors, plus the CPU engine's top-log-prob extension."""
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lima"]},
                                               "days": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["city", "days"], "additionalProperties": False}
    prompt = demo_tokenizer.encode_chat([{"role": "user", "content": "Plan a trip"}])
    extra = {"end_id": (np.array([[demo_tokenizer.eos_token_id]], dtype=np.int32), "INT32"),
             "runtime_top_k": (np.array([[1]], dtype=np.int32), "INT32"),
             "guided_decoding_guide_type": (np.array([[b"json_schema"]], dtype=object), "BYTES"),
             "guided_decoding_guide": (np.array([[json.dumps(schema).encode()]], dtype=object), "BYTES"),
             "return_log_probs": (np.array([[True]], dtype=bool), "BOOL"),
             "num_top_log_probs": (np.array([[3]], dtype=np.int32), "INT32")}
    responses = _stream(triton, "tensorrt_llm", _llm_inputs(prompt, 60, **extra))
    tokens = _tokens(responses)
    jsonschema.validate(json.loads(demo_tokenizer.decode(tokens)), schema)
    logprobs: list[float] = []
    cumulative = None
    for result, _ in responses:
        if result is None or result.as_numpy("output_ids") is None:
            continue
        count = int(result.as_numpy("sequence_length").reshape(-1)[0])
        chunk = result.as_numpy("output_log_probs")
        assert chunk.shape == (1, 1, count)  # [batch, beam, tokens carried by this response]
        top = result.as_numpy("output_top_log_probs")
        top_ids = result.as_numpy("output_top_log_prob_ids")
        assert top.shape == top_ids.shape == (1, 1, count, 3)
        assert (np.diff(top[0, 0], axis=-1) <= 0).all()  # best first
        # raw log-probs (before the grammar's mask): a constrained token is at most as likely as the model's best
        assert (chunk[0, 0] <= top[0, 0, :, 0] + 1e-5).all()
        logprobs += chunk.reshape(-1).tolist()
        cumulative = float(result.as_numpy("cum_log_probs").reshape(-1)[0])
    assert len(logprobs) == len(tokens) and all(lp <= 0 for lp in logprobs)
    assert cumulative == pytest.approx(sum(logprobs), abs=1e-3)
    unguided = {key: extra[key] for key in ("runtime_top_k", "return_log_probs", "num_top_log_probs")}
    for result, error in _stream(triton, "tensorrt_llm", _llm_inputs(prompt, 6, **unguided)):
        assert error is None, error
        if result is not None and result.as_numpy("output_ids") is not None:  # greedy: each token is its own top-1
            count = int(result.as_numpy("sequence_length").reshape(-1)[0])
            ids = result.as_numpy("output_ids").reshape(-1)[:count]
            assert (result.as_numpy("output_top_log_prob_ids")[0, 0, :, 0] == ids).all()
            assert np.allclose(result.as_numpy("output_log_probs")[0, 0],
                               result.as_numpy("output_top_log_probs")[0, 0, :, 0])
    plain = _stream(triton, "tensorrt_llm", _llm_inputs(prompt, 4))  # not asked: no log-prob tensors
    assert all(r.as_numpy("output_log_probs") is None for r, _ in plain if r is not None)


def test_llm_slot_invalid_guide_is_the_requests_error(triton, demo_tokenizer) -> None:
    prompt = demo_tokenizer.encode_chat([{"role": "user", "content": "Hello!"}])
    bad = {"guided_decoding_guide_type": (np.array([[b"regex"]], dtype=object), "BYTES"),
           "guided_decoding_guide": (np.array([[b"([a-z"]], dtype=object), "BYTES")}
    responses = _stream(triton, "tensorrt_llm", _llm_inputs(prompt, 4, **bad))
    error = responses[-1][1]
    assert error is not None and "invalid request" in str(error) and "regex" in str(error)
    assert _tokens(_stream(triton, "tensorrt_llm", _llm_inputs(prompt, 4)))  # the model still serves
