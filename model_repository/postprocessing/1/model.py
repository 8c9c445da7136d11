"""Token ids → text. Keeps an incremental detokeniser per request id so streamed pieces are whole UTF-8."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import triton_python_backend_utils as pb_utils

from engine.stub_lifetime import watch_server
from engine.tokenizer import ChatTokenizer, IncrementalDetokenizer

MAX_TRACKED_REQUESTS = 4096  # bound on detokeniser state for streams that never finish cleanly


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        watch_server()  # this stub ends with its tritonserver, however that ends
        config = json.loads(args["model_config"])
        self.tokenizer = ChatTokenizer.from_pretrained(config["parameters"]["tokenizer_dir"]["string_value"])
        self._streams: OrderedDict[str, IncrementalDetokenizer] = OrderedDict()

    def execute(self, requests: list) -> list:
        return [self._one(request) for request in requests]

    def _detokenizer(self, request_id: str) -> IncrementalDetokenizer:
        if not request_id:
            return self.tokenizer.detokenizer()  # no id: every call stands alone
        detok = self._streams.pop(request_id, None) or self.tokenizer.detokenizer()
        self._streams[request_id] = detok
        while len(self._streams) > MAX_TRACKED_REQUESTS:
            self._streams.popitem(last=False)
        return detok

    def _one(self, request) -> pb_utils.InferenceResponse:
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()  # [1, beams, T]
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy().reshape(-1)
        beams = tokens.reshape(lengths.size, -1)
        texts = []
        for beam, length in zip(beams, lengths, strict=True):
            ids = [int(t) for t in beam[: int(length)]]
            if lengths.size == 1:
                texts.append(self._detokenizer(request.request_id()).push(ids))
            else:
                texts.append(self.tokenizer.decode(ids))
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("OUTPUT", np.asarray([[t.encode("utf-8") for t in texts]], dtype=np.object_)),
        ])
