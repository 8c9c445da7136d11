"""Text (or chat messages as JSON) → token ids, with TensorRT-LLM's preprocessing tensor names."""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from engine.stub_lifetime import watch_server
from engine.tokenizer import ChatTokenizer


def _strings(request, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


def word_list(sequences: list[list[int]]) -> np.ndarray:
    """TensorRT-LLM's [1, 2, N] word-list layout: concatenated ids, then end offsets padded with -1."""
    flat = [t for seq in sequences for t in seq]
    offsets = np.cumsum([len(seq) for seq in sequences]).tolist() if sequences else []
    width = max(len(flat), len(offsets), 1)
    array = np.full((1, 2, width), -1, dtype=np.int32)
    array[0, 0, :] = 0
    array[0, 0, :len(flat)] = flat
    array[0, 1, :len(offsets)] = offsets
    return array


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        watch_server()  # this stub ends with its tritonserver, however that ends
        config = json.loads(args["model_config"])
        tokenizer_dir = config["parameters"]["tokenizer_dir"]["string_value"]
        self.tokenizer = ChatTokenizer.from_pretrained(tokenizer_dir)

    def execute(self, requests: list) -> list:
        return [self._one(request) for request in requests]

    def _one(self, request) -> pb_utils.InferenceResponse:
        try:
            query = _strings(request, "QUERY")[0]
            chat = pb_utils.get_input_tensor_by_name(request, "APPLY_CHAT_TEMPLATE")
            if chat is not None and bool(chat.as_numpy().reshape(-1)[0]):
                ids = self.tokenizer.encode_chat(json.loads(query))
            else:
                ids = self.tokenizer.encode(query)
            if not ids:
                raise ValueError("the query encodes to no tokens")
            output_len = pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy().reshape(-1)
            end_id = pb_utils.get_input_tensor_by_name(request, "END_ID")
            pad_id = pb_utils.get_input_tensor_by_name(request, "PAD_ID")
            stops = [self.tokenizer.encode(w) for w in _strings(request, "STOP_WORDS_DICT") if w]
            bads = [self.tokenizer.encode(w) for w in _strings(request, "BAD_WORDS_DICT") if w]
            end = int(end_id.as_numpy().reshape(-1)[0]) if end_id is not None else self.tokenizer.eos_token_id
            pad = int(pad_id.as_numpy().reshape(-1)[0]) if pad_id is not None else self.tokenizer.pad_token_id
            return pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("INPUT_ID", np.asarray([ids], dtype=np.int32)),
                pb_utils.Tensor("REQUEST_INPUT_LEN", np.asarray([[len(ids)]], dtype=np.int32)),
                pb_utils.Tensor("BAD_WORDS_IDS", word_list(bads)),
                pb_utils.Tensor("STOP_WORDS_IDS", word_list(stops)),
                pb_utils.Tensor("OUT_END_ID", np.asarray([[end]], dtype=np.int32)),
                pb_utils.Tensor("OUT_PAD_ID", np.asarray([[pad]], dtype=np.int32)),
                pb_utils.Tensor("REQUEST_OUTPUT_LEN_OUT", np.asarray([[int(output_len[0])]], dtype=np.int32)),
            ])
        except Exception as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocessing: {exc}"))
