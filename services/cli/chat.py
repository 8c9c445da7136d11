"""`sluice chat "message"`: stream one reply through the OpenAI-compatible HTTP API (the same path as any SDK), as
--api-key, SLUICE_API_KEY or the local dev key; prints the citations (with --collection) and the request id."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO

from services.cli.api import resolve_api_key
from services.common.settings import Settings


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """The parsed `data:` frames of a Server-Sent Events body, until [DONE]."""
    for raw in response:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def _http_error_words(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read() or b"{}").get("error") or {}
    except ValueError:
        error = {}
    message = error.get("message") or exc.reason
    if exc.code == 401:
        return (f"the API key was refused ({message}) Pass --api-key, set SLUICE_API_KEY, or run `sluice up` to "
                "create the local dev key.")
    if exc.code == 429:
        wait = exc.headers.get("retry-after")
        return f"rate limited: {message}" + (f" Retry after {wait} s." if wait else "")
    return message


def chat(message: str, *, model: str | None = None, max_tokens: int = 128, system: str | None = None,
         temperature: float | None = None, collections: list[str] | None = None, api_key: str | None = None,
         settings: Settings | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    settings = settings or Settings.from_env()
    out, err = out or sys.stdout, err or sys.stderr
    key, _ = resolve_api_key(settings, api_key)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    body: dict[str, Any] = {"model": model or settings.model_name, "messages": messages, "max_tokens": max_tokens,
                            "stream": True, "stream_options": {"include_usage": True}}
    if temperature is not None:
        body["temperature"] = temperature
    if collections:
        body["retrieval"] = {"collections": collections}
    request = urllib.request.Request(f"{settings.public_base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    request_id = None
    reason, usage, citations = None, None, None
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            request_id = response.headers.get("x-request-id")
            for event in _events(response):
                if "error" in event:
                    print(f"\nsluice chat: the reply was cut short: {event['error'].get('message')}", file=err)
                    return 1
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        print(text, end="", flush=True, file=out)
                    reason = choice.get("finish_reason") or reason
                citations = event.get("citations", citations)
                usage = event.get("usage") or usage
    except urllib.error.HTTPError as exc:
        request_id = exc.headers.get("x-request-id")
        print(f"sluice chat: {_http_error_words(exc)}", file=err)
        if request_id:
            print(f"request id {request_id} (sluice trace {request_id})", file=err)
        return 1
    except (urllib.error.URLError, ConnectionError) as exc:
        reason_text = getattr(exc, "reason", exc)
        print(f"sluice chat: the Sluice API at {settings.public_base_url} is not answering ({reason_text}); is the "
              "stack running? Start it with `sluice up`.", file=err)
        return 1
    tokens = f"; {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens" if usage else ""
    print(f"\n[{reason or 'unfinished'}{tokens}]", file=out)
    if reason == "content_filter":
        print("the content filter stopped this reply", file=out)
    for n, citation in enumerate(citations or [], 1):
        print(f"  [{n}] {citation.get('source')} (score {citation.get('score')}): {citation.get('snippet')}",
              file=out)
    print(f"request id {request_id} (sluice trace {request_id})", file=out)
    return 0
