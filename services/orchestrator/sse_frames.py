"""Server-Sent Events frames of one streamed chat completion, as HttpBody messages for Envoy's transcoder.

A text delta is the frame a stream sends per token, so its bytes are assembled from a prefix and a suffix encoded
once per stream, with only the new text JSON-encoded per token; rarer frames (role, tool calls, finish, usage,
errors) are encoded whole. orjson writes compact UTF-8 JSON, the same text as
`json.dumps(..., ensure_ascii=False, separators=(",", ":"))`."""

from __future__ import annotations

from typing import Any

import orjson
from google.api import httpbody_pb2

SSE = "text/event-stream"


def sse(payload: dict[str, Any] | str) -> httpbody_pb2.HttpBody:
    """One `data:` frame: a JSON payload, or a literal such as "[DONE]"."""
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return httpbody_pb2.HttpBody(content_type=SSE, data=b"data: " + data + b"\n\n")


class ChunkFrames:
    """`chat.completion.chunk` frames for one completion."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self._head_bytes = b"data: " + orjson.dumps(self._head())[:-1]  # without the closing brace
        self._text_prefixes: dict[int, bytes] = {}  # per choice index
        self._text_suffix = (b'},"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"")
                             + b"}\n\n")

    def _head(self) -> dict[str, Any]:
        return {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None}

    def text(self, content: str, index: int = 0) -> httpbody_pb2.HttpBody:
        """The frame of one text delta of choice `index` (the per-token path)."""
        prefix = self._text_prefixes.get(index)
        if prefix is None:
            prefix = self._head_bytes + b',"choices":[{"index":%d,"delta":{"content":' % index
            self._text_prefixes[index] = prefix
        return httpbody_pb2.HttpBody(content_type=SSE, data=prefix + orjson.dumps(content) + self._text_suffix)

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, *, index: int = 0,
              logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = {**self._head(), "choices": [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}
        if self.include_usage:
            payload["usage"] = None
        return payload

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._head(), "choices": [], "usage": usage}
