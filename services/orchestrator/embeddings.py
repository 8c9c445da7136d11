"""POST /v1/embeddings: OpenAI's embeddings API over the Triton `embedder` (all-MiniLM-L6-v2, 384 dimensions).

Inputs are strings (one or a list). Token-id arrays are refused: they would be ids of some other tokenizer.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.api import httpbody_pb2

from services.common.errors import ApiError, internal, invalid, model_not_found, unavailable
from services.orchestrator.chat_request import parse_json_body, refuse_unsupported
from services.orchestrator.tenancy.metering import RequestMeter, UnmeteredRequest
from services.retrieval.embedding_client import EmbedderUnavailable, EmbeddingClient
from services.retrieval.embedding_model import DIMENSIONS, MODEL_NAME

log = logging.getLogger(__name__)

MAX_INPUTS = 2048  # OpenAI's limit per request
KNOWN_FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}
CREATED = int(time.time())


def model_card() -> dict[str, Any]:
    return {"id": MODEL_NAME, "object": "model", "created": CREATED, "owned_by": "sluice"}


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    texts: list[str]
    encoding_format: str


def estimated_tokens(texts: list[str]) -> int:
    """An upper bound of the WordPiece tokens, reserved at admission (the exact count is known after embedding):
    at most one token per character, plus [CLS] and [SEP]."""
    return sum(min(len(text), 512) + 2 for text in texts)


def parse_embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    refuse_unsupported(body, KNOWN_FIELDS)  # one rule for what is not implemented (chat_request.py)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter", "model", "missing_required_parameter")
    if model != MODEL_NAME:
        raise model_not_found(model)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise invalid("'input' must be a non-empty string or a non-empty array of strings.", "input",
                      "invalid_input")
    if not all(isinstance(t, str) for t in texts):
        raise invalid(f"'input' must contain strings: token-id arrays are not supported by {MODEL_NAME}, whose "
                      "tokenizer is not OpenAI's.", "input", "invalid_input")
    if any(not t for t in texts):
        raise invalid("'input' cannot contain an empty string.", "input", "invalid_input")
    if len(texts) > MAX_INPUTS:
        raise invalid(f"'input' may hold at most {MAX_INPUTS} strings, got {len(texts)}.", "input", "invalid_input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}.", "encoding_format",
                      "invalid_value")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or dimensions != DIMENSIONS):
        raise invalid(f"{MODEL_NAME} only supports dimensions={DIMENSIONS}.", "dimensions", "invalid_value")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise invalid("'user' must be a string.", "user", "invalid_type")
    return EmbeddingsRequest(texts, encoding)


def embeddings_payload(vectors: np.ndarray, num_tokens: np.ndarray, encoding_format: str) -> dict[str, Any]:
    def encode(row: np.ndarray) -> list[float] | str:
        if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        return row.tolist()

    tokens = int(num_tokens.sum())
    return {"object": "list", "model": MODEL_NAME,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class EmbeddingsEndpoint:
    def __init__(self, client: EmbeddingClient) -> None:
        self.client = client

    async def handle(self, request: httpbody_pb2.HttpBody, request_id: str,
                     meter: RequestMeter | None = None) -> tuple[int, dict[str, Any], float | None]:
        """Returns (HTTP status, JSON body, seconds to retry after); errors are already in OpenAI's shape. The
        meter admits the request (reserving an upper bound of its tokens) and is told the exact count afterwards."""
        meter = meter or UnmeteredRequest()
        try:
            parsed = parse_embeddings_request(parse_json_body(request.data))
            await meter.admit(MODEL_NAME, estimated_tokens(parsed.texts), 0)
            result = await self.client.embed(parsed.texts)
        except ApiError as error:
            meter.fail(error.status)
            return error.status, error.body(), error.retry_after
        except EmbedderUnavailable as exc:
            log.warning("request %s: %s", request_id, exc)
            meter.fail(503)
            return 503, unavailable("The embedding model is unavailable; retry shortly.").body(), 1.0
        except Exception:
            log.exception("request %s failed", request_id)
            meter.fail(500)
            return 500, internal().body(), None
        meter.account.prompt_tokens = int(result.num_tokens.sum())
        return 200, embeddings_payload(result.vectors, result.num_tokens, parsed.encoding_format), None

    async def respond(self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext,
                      request_id: str, meter: RequestMeter | None = None) -> httpbody_pb2.HttpBody:
        meter = meter or UnmeteredRequest()
        status, body, retry_after = await self.handle(request, request_id, meter)
        headers = {"x-request-id": request_id, "x-http-status": str(status), **await meter.headers()}
        if retry_after:
            headers["retry-after"] = str(math.ceil(retry_after))
        await context.send_initial_metadata(tuple(headers.items()))
        return httpbody_pb2.HttpBody(content_type="application/json",
                                     data=json.dumps(body, separators=(",", ":")).encode())

    async def close(self) -> None:
        await self.client.close()
