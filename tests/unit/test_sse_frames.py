"""SSE frames built once per stream are byte for byte what encoding each chunk whole gives."""

from __future__ import annotations

import json

import pytest

from services.orchestrator.sse_frames import ChunkFrames, sse


def _whole(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("text", ["Hello", ' "quoted" \\ back\nslash', "naïve 東京 🙂", "\u2028\x00"])
def test_text_frames_match_whole_chunk_encoding(text: str, include_usage: bool) -> None:
    frames = ChunkFrames("chatcmpl-9", 1700000000, 'model "x"', include_usage)
    frame = frames.text(text)
    assert frame.content_type == "text/event-stream"
    assert frame.data == _whole(frames.chunk({"content": text}))
    assert json.loads(frame.data[len(b"data: "):])["choices"][0]["delta"]["content"] == text


def test_other_frames() -> None:
    frames = ChunkFrames("c", 1, "m", True)
    assert sse("[DONE]").data == b"data: [DONE]\n\n"
    assert sse(frames.chunk({}, "stop")).data == _whole(frames.chunk({}, "stop"))
    usage = frames.usage({"prompt_tokens": 3})
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3} and usage["object"].endswith("chunk")
