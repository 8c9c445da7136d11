"""Streams token ids from Triton's `tensorrt_llm` model over gRPC (decoupled, one bidirectional stream per request).

The orchestrator talks to the LLM slot directly rather than through the ensemble: Triton 2.51 forwards a client's
cancellation to a model only on a direct call, and a stopped stream must free the engine's batch slot at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from engine.block_manager import DEFAULT_BLOCK_SIZE
from engine.streaming import STREAM_WORDS_PARAMETER
from services.common.errors import ApiError, unavailable
from services.common.telemetry import start_triton_call

log = logging.getLogger(__name__)

LLM_MODEL = "tensorrt_llm"


@dataclass(frozen=True, slots=True)
class LLMParams:
    """What the engine samples with. Scheduling priority is not here: it changes when a request runs, not what it
    produces, so it is passed to `stream` on its own and stays out of the response-cache key."""

    max_tokens: int
    end_id: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    cache_salt_id: int | None = None  # prefix-cache namespace (None: shared by every request of the deployment)
    guide_type: str | None = None  # TensorRT-LLM guided decoding: "json" | "json_schema" | "regex" | "ebnf_grammar"
    guide: str | None = None  # the schema, regex or grammar (llguidance's Lark-like syntax for ebnf_grammar)
    logprobs: bool = False  # return each generated token's log-prob (TensorRT-LLM's return_log_probs)
    top_logprobs: int = 0  # 0..20 most likely alternatives per token (Sluice extension: num_top_log_probs)


def _input(name: str, value: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(value.shape), {
        np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32", np.dtype(np.uint64): "UINT64",
        np.dtype(np.bool_): "BOOL", np.dtype(np.object_): "BYTES"}[value.dtype])
    tensor.set_data_from_numpy(value)
    return tensor


def build_inputs(prompt_ids: list[int], params: LLMParams, priority: int = 0) -> list[InferInput]:
    scalars: list[tuple[str, np.ndarray]] = [
        ("input_lengths", np.array([[len(prompt_ids)]], dtype=np.int32)),
        ("request_output_len", np.array([[params.max_tokens]], dtype=np.int32)),
        ("end_id", np.array([[params.end_id]], dtype=np.int32)),
        ("temperature", np.array([[params.temperature]], dtype=np.float32)),
        ("runtime_top_p", np.array([[params.top_p]], dtype=np.float32)),
        ("runtime_top_k", np.array([[params.top_k]], dtype=np.int32)),
        ("presence_penalty", np.array([[params.presence_penalty]], dtype=np.float32)),
        ("frequency_penalty", np.array([[params.frequency_penalty]], dtype=np.float32)),
        ("repetition_penalty", np.array([[params.repetition_penalty]], dtype=np.float32)),
        ("min_tokens", np.array([[params.min_tokens]], dtype=np.int32)),
        ("streaming", np.array([[True]], dtype=np.bool_)),
        ("exclude_input_in_output", np.array([[True]], dtype=np.bool_)),
        ("priority", np.array([[priority]], dtype=np.int32)),
    ]
    if params.seed is not None:
        scalars.append(("seed", np.array([[params.seed % 2**64]], dtype=np.uint64)))
    if params.cache_salt_id is not None:
        scalars.append(("cache_salt_id", np.array([[params.cache_salt_id]], dtype=np.uint64)))
    if params.guide_type is not None:
        scalars.append(("guided_decoding_guide_type", np.array([[params.guide_type.encode()]], dtype=np.object_)))
        scalars.append(("guided_decoding_guide", np.array([[(params.guide or "").encode()]], dtype=np.object_)))
    if params.logprobs:
        scalars.append(("return_log_probs", np.array([[True]], dtype=np.bool_)))
        if params.top_logprobs:
            scalars.append(("num_top_log_probs", np.array([[params.top_logprobs]], dtype=np.int32)))
    inputs = [_input("input_ids", np.array([prompt_ids], dtype=np.int32))]
    inputs.extend(_input(name, value) for name, value in scalars)
    return inputs


@dataclass(slots=True)
class LLMChunk:
    token_ids: list[int]
    cached_prompt_tokens: int  # prompt tokens the engine served from its prefix cache
    logprobs: list[float] | None = None  # one per token id, when asked for
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per token: the k best (token id, logprob), best first

    def extended(self, later: LLMChunk) -> LLMChunk:
        """This chunk followed by `later` (the engine's next response for the same request) as one chunk."""
        def joined(a: list | None, b: list | None) -> list | None:
            return None if a is None and b is None else (a or []) + (b or [])

        return LLMChunk(self.token_ids + later.token_ids, later.cached_prompt_tokens or self.cached_prompt_tokens,
                        joined(self.logprobs, later.logprobs), joined(self.top_logprobs, later.top_logprobs))


@dataclass(slots=True)
class TokenTally:
    """Every token the engine produced for one stream, including those that arrived after the caller stopped
    reading (drained when the request was stopped): what usage accounting counts."""

    received: int = 0
    cached_prompt_tokens: int = 0


STOP_DRAIN_TIMEOUT_S = 2.0  # how long a stopped request may take to deliver its last tokens before it is cut


class TritonLLM:
    def __init__(self, url: str, model_name: str = LLM_MODEL, kv_block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.url = url
        self.model_name = model_name
        self.kv_block_size = kv_block_size  # converts TensorRT-LLM's kv_cache_reused_blocks into tokens
        self._client = triton_aio.InferenceServerClient(url=url)

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.model_name))
        except Exception:
            return False

    def _chunk(self, result) -> LLMChunk | None:
        outputs = int32_outputs(result.get_response())
        ids, lengths = outputs.get("output_ids"), outputs.get("sequence_length")
        reused = outputs.get("kv_cache_reused_blocks")
        cached = int(reused[0]) * self.kv_block_size if reused is not None and len(reused) else 0
        if ids is None or lengths is None or not len(lengths) or int(lengths[0]) <= 0:
            return None
        count = int(lengths[0])
        chunk = LLMChunk(ids[:count].tolist(), cached)
        floats = fp32_outputs(result.get_response())
        logprobs = floats.get("output_log_probs")
        if logprobs is not None:
            chunk.logprobs = logprobs[:count].tolist()
            top, top_ids = floats.get("output_top_log_probs"), outputs.get("output_top_log_prob_ids")
            if top is not None and top_ids is not None and len(top) and len(top) == len(top_ids):
                k = len(top) // max(count, 1)  # [beam=1, new_tokens, k], flattened
                chunk.top_logprobs = [list(zip(top_ids[i * k:(i + 1) * k].tolist(), top[i * k:(i + 1) * k].tolist(),
                                               strict=True)) for i in range(count)]
        return chunk

    async def stream(self, request_id: str, prompt_ids: list[int], params: LLMParams,
                     model_name: str | None = None, tally: TokenTally | None = None,
                     priority: int = 0, whole_words: bool = False) -> AsyncIterator[LLMChunk]:
        """Yields new token ids until the engine ends the request. Closing the iterator early (the client went
        away, a stop string matched) stops the request in the engine — TensorRT-LLM's `stop` request, then the
        last tokens are drained into `tally` — and cancels the gRPC stream if that takes too long.
        `whole_words`: the caller releases text only up to its last whitespace (the output guard), so the engine
        may send a response per word instead of per token (a request parameter the Sluice engine reads and other
        backends ignore; engine/streaming.py)."""
        model = model_name or self.model_name
        # Unique in the engine even if a client reuses ids; the trace context rides along (see common/telemetry.py)
        call = start_triton_call(model, f"{request_id}:{uuid.uuid4().hex[:8]}", method="ModelStreamInfer")
        triton_id = call.request_id
        tally = tally if tally is not None else TokenTally()
        inputs = build_inputs(prompt_ids, params, priority)
        outputs = [InferRequestedOutput("output_ids"), InferRequestedOutput("sequence_length"),
                   InferRequestedOutput("kv_cache_reused_blocks")]
        if params.logprobs:  # optional outputs: asked for only when wanted
            outputs.append(InferRequestedOutput("output_log_probs"))
            if params.top_logprobs:
                outputs += [InferRequestedOutput(name) for name in ("output_top_log_probs", "output_top_log_prob_ids")]

        request = {"model_name": model, "inputs": inputs, "outputs": outputs, "request_id": triton_id}
        if whole_words:
            request["parameters"] = {STREAM_WORDS_PARAMETER: True}

        async def requests() -> AsyncIterator[dict]:
            yield request

        responses = self._client.stream_infer(requests(), headers=call.headers)
        # A separate task reads the gRPC stream: cancelling the caller (a client that went away) must not cancel the
        # read, or the tokens already on their way would be lost to usage accounting.
        inbox: asyncio.Queue = asyncio.Queue()
        pump = asyncio.create_task(_pump(responses, inbox))
        finished = False
        pending: object = None  # an item taken off the inbox while coalescing that ends the run of responses
        try:
            while (item := pending if pending is not None else await inbox.get()) is not _END:
                pending = None
                result, error = _unwrap(item)
                if error is not None:
                    raise _api_error(error)
                chunk = self._chunk(result)
                # Responses that queued up while the caller worked on the last one go out as one chunk: under load
                # each further pass through detokenizer, guard and SSE writer costs as much as the first.
                while not inbox.empty():
                    queued = inbox.get_nowait()
                    if queued is _END or isinstance(queued, Exception) or queued[1] is not None:  # type: ignore[index]
                        pending = queued
                        break
                    more = self._chunk(queued[0])  # type: ignore[index]
                    if more is not None:
                        chunk = more if chunk is None else chunk.extended(more)
                if chunk is not None:
                    tally.received += len(chunk.token_ids)
                    tally.cached_prompt_tokens = chunk.cached_prompt_tokens
                    yield chunk
            # The request side is closed after one request, so Triton ends the stream after the final response.
            finished = True
        except Exception as exc:
            call.fail(exc)
            raise
        finally:
            if not finished:
                await self._stop_and_drain(model, triton_id, responses, inbox, tally, call.headers, pending)
            pump.cancel()
            call.span.set_attribute("triton.output_tokens", tally.received)
            call.end()

    async def _stop_and_drain(self, model: str, triton_id: str, responses, inbox: asyncio.Queue,
                              tally: TokenTally, headers: dict[str, str] | None = None, first: object = None) -> None:
        """`first`: an item already taken off the inbox (the stream's end, when the caller stopped right before)."""
        try:
            async with asyncio.timeout(STOP_DRAIN_TIMEOUT_S):
                if first is _END:
                    return  # the engine had already finished the request: nothing to stop
                await self._send_stop(model, triton_id, headers)
                while (item := first if first is not None else await inbox.get()) is not _END:
                    first = None
                    result, error = _unwrap(item)
                    if error is not None:
                        break
                    chunk = self._chunk(result)
                    if chunk is not None:
                        tally.received += len(chunk.token_ids)
                return
        except (asyncio.CancelledError, Exception) as exc:  # a timeout included: the stream is cut below either way
            log.warning("request %s: stop-and-drain did not complete (%r)", triton_id, exc)
        responses.cancel()  # Triton sees the cancellation within one engine step

    async def _send_stop(self, model: str, triton_id: str, headers: dict[str, str] | None = None) -> None:
        async def stop_request() -> AsyncIterator[dict]:
            yield {"model_name": model, "request_id": triton_id, "inputs": [
                _input("input_ids", np.zeros((1, 1), dtype=np.int32)),
                _input("input_lengths", np.ones((1, 1), dtype=np.int32)),
                _input("request_output_len", np.ones((1, 1), dtype=np.int32)),
                _input("stop", np.array([[True]], dtype=np.bool_))]}

        async for _, error in self._client.stream_infer(stop_request(), headers=headers):
            if error is not None:
                raise error


_END = object()


def _outputs_of_type(response, datatype: str, dtype: type, contents_field: str) -> dict[str, np.ndarray]:
    raw = response.raw_output_contents
    found: dict[str, np.ndarray] = {}
    for index, output in enumerate(response.outputs):
        if output.datatype == datatype:
            if index < len(raw):
                found[output.name] = np.frombuffer(raw[index], dtype=dtype)
            elif values := getattr(output.contents, contents_field):
                found[output.name] = np.asarray(values, dtype=dtype)
    return found


def int32_outputs(response) -> dict[str, np.ndarray]:
    """The INT32 outputs of one ModelInferResponse, flattened, read straight from its raw contents: one response
    arrives per generated token, and tritonclient's `as_numpy` costs ~20 us per tensor (it looks each name up and
    maps the datatype by string comparisons). Other datatypes and non-raw contents are left out."""
    return _outputs_of_type(response, "INT32", np.int32, "int_contents")


def fp32_outputs(response) -> dict[str, np.ndarray]:
    """The FP32 outputs of one response (log-probs), flattened, as `int32_outputs` reads the INT32 ones."""
    return _outputs_of_type(response, "FP32", np.float32, "fp32_contents")


async def _pump(responses, inbox: asyncio.Queue) -> None:
    """Moves (result, error) pairs from the gRPC stream into `inbox`, then _END (or the exception that ended it)."""
    try:
        async for item in responses:
            inbox.put_nowait(item)
        inbox.put_nowait(_END)
    except asyncio.CancelledError:
        inbox.put_nowait(_END)
        raise
    except Exception as exc:
        inbox.put_nowait(exc)


def _unwrap(item: object) -> tuple[object, Exception | None]:
    """A queued response pair, or a stream failure turned into the same error handling as Triton's own."""
    if isinstance(item, InferenceServerException):
        return None, item
    if isinstance(item, Exception):  # grpc.aio errors surface here when Triton goes away mid-stream
        raise unavailable(f"The inference server is unavailable: {type(item).__name__}") from item
    result, error = item  # type: ignore[misc]
    return result, error


def _api_error(error: Exception) -> ApiError:
    message = str(error)
    if "invalid request" in message:
        return ApiError(400, message.split("invalid request: ", 1)[-1], "invalid_request_error", None,
                        "invalid_value")
    log.warning("triton error: %s", message)
    return unavailable("The inference server failed to process the request.")
