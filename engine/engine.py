"""The engine loop: a background thread that takes requests and streams their tokens to output sinks.

This first engine generates one sequence at a time with a contiguous KV cache per request; the in-flight batching
engine with a paged KV cache replaces its `_run_one` while keeping this interface.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import torch

from engine.model import Llama, ModelArgs
from engine.request import FinishReason, GenerationRequest, OutputSink, StepOutput
from engine.sampling import hits_stop_sequence, sample_next

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Work:
    request: GenerationRequest
    sink: OutputSink


class Engine:
    def __init__(self, model: Llama, args: ModelArgs, *, max_seq_len: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.model = model.eval()
        self.args = args
        self.device = torch.device(device)
        self.max_seq_len = min(max_seq_len or args.max_position_embeddings, args.max_position_embeddings)
        self._queue: queue.Queue[_Work | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sluice-engine", daemon=True)
            self._thread.start()

    def submit(self, request: GenerationRequest, sink: OutputSink) -> None:
        if len(request.prompt_ids) >= self.max_seq_len:
            raise ValueError(f"prompt has {len(request.prompt_ids)} tokens; the context window is {self.max_seq_len}")
        self._queue.put(_Work(request, sink))

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stopping.is_set():
            work = self._queue.get()
            if work is None:
                break
            try:
                self._run_one(work.request, work.sink)
            except Exception as exc:  # one failing request gets its own error; the loop goes on
                log.exception("request %s failed", work.request.request_id)
                work.sink.fail(exc)

    def _run_one(self, request: GenerationRequest, sink: OutputSink) -> None:
        params = request.params
        prompt = request.prompt_ids
        budget = min(params.max_tokens, self.max_seq_len - len(prompt))
        cache = self.model.new_cache(1, len(prompt) + budget, dtype=torch.float32, device=self.device)
        generator = params.make_generator()
        tokens = torch.tensor([prompt], dtype=torch.long, device=self.device)
        logits = self.model(tokens, start_pos=0, cache=cache)[0, -1]
        output: list[int] = []
        position = len(prompt)
        while True:
            if sink.is_cancelled() or self._stopping.is_set():
                sink.emit(StepOutput(request.request_id, [], finished=True, finish_reason=FinishReason.CANCELLED))
                return
            token = sample_next(logits, params, prompt, output, generator)
            if params.end_id is not None and token == params.end_id:
                sink.emit(StepOutput(request.request_id, [], finished=True, finish_reason=FinishReason.STOP))
                return
            output.append(token)
            if hits_stop_sequence(params, output):
                sink.emit(StepOutput(request.request_id, [token], finished=True, finish_reason=FinishReason.STOP))
                return
            if len(output) >= budget:
                sink.emit(StepOutput(request.request_id, [token], finished=True, finish_reason=FinishReason.LENGTH))
                return
            sink.emit(StepOutput(request.request_id, [token]))
            step = torch.tensor([[token]], dtype=torch.long, device=self.device)
            logits = self.model(step, start_pos=position, cache=cache)[0, -1]
            position += 1
