"""`previous_response_id` for /v1/responses, kept in the conversation store (services/orchestrator/conversations).

Each stored response is one conversation holding the whole history up to and including that response, and its id
names the conversation: `resp_<conversation hex>`. Continuing from any response, the latest or an older one (a
branch), copies that history into the new response's conversation, so no chain ever sees another branch's turns and
two clients continuing the same response at once never interleave. The id is fixed before generation starts (the
streamed events carry it from `response.created` on). Instructions are not stored (as with OpenAI, they apply to one
response).

Stored rows, in chat-completions form: user and assistant text as is; an assistant turn that called functions has
finish_reason "tool_calls" and its content is `{"content": ..., "tool_calls": [...]}` as JSON; a function's output is
a "tool" row whose content is `{"tool_call_id": ..., "content": ...}`.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from typing import Any

from services.common.errors import ApiError
from services.orchestrator.conversations.store import ConversationStore

_RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{32})$")


def response_id(conversation_id: str) -> str:
    return f"resp_{uuid.UUID(conversation_id).hex}"


def previous_not_found(previous: str) -> ApiError:
    return ApiError(404, f"Previous response with id '{previous}' not found.", "invalid_request_error",
                    "previous_response_id", "previous_response_not_found")


def _as_chat(role: str, content: str, finish_reason: str | None) -> dict[str, Any]:
    if role == "assistant" and finish_reason == "tool_calls":
        saved = json.loads(content)
        return {"role": "assistant", "content": saved.get("content") or None, "tool_calls": saved["tool_calls"]}
    if role == "tool":
        saved = json.loads(content)
        return {"role": "tool", "tool_call_id": saved["tool_call_id"], "content": saved["content"]}
    return {"role": role, "content": content}


def stored_form(message: dict[str, Any]) -> tuple[str, str, str | None]:
    """(role, content, finish_reason) of a chat-form message, as a stored row."""
    if message["role"] == "assistant" and message.get("tool_calls"):
        return "assistant", json.dumps({"content": message.get("content"), "tool_calls": message["tool_calls"]},
                                       ensure_ascii=False), "tool_calls"
    if message["role"] == "tool":
        return "tool", json.dumps({"tool_call_id": message["tool_call_id"], "content": message["content"]},
                                  ensure_ascii=False), None
    return message["role"], message.get("content") or "", None


class ResponseChain:
    def __init__(self, store: ConversationStore) -> None:
        self.store = store

    def history(self, tenant: str, previous: str) -> list[dict[str, Any]]:
        """The chat-form messages up to and including response `previous`; 404 for an unknown id or another
        tenant's."""
        match = _RESPONSE_ID.match(previous)
        if match is None:
            raise previous_not_found(previous)
        try:
            conversation = self.store.get(tenant, str(uuid.UUID(match.group(1))))
        except ApiError:
            raise previous_not_found(previous) from None
        return [_as_chat(m.role, m.content, m.finish_reason) for m in conversation.messages]

    def reserve(self, tenant: str, model: str, user: str | None) -> str:
        """A new response's conversation, made before generation: its id is the response's id from the start."""
        return self.store.create(tenant, model, user_id=user).id

    def save(self, tenant: str, conversation_id: str, messages: list[dict[str, Any]], usage: tuple[int, int]) -> None:
        """Writes the history and the new turns (input items, then the answer, last) into the reserved
        conversation."""
        for index, message in enumerate(messages):
            role, content, finish = stored_form(message)
            is_answer = index == len(messages) - 1
            self.store.append_message(
                tenant, conversation_id, role, content, finish_reason=finish or (message.get("finish") if is_answer
                                                                                 else None),
                prompt_tokens=usage[0] if is_answer else None, completion_tokens=usage[1] if is_answer else None)

    def forget(self, tenant: str, conversation_id: str) -> None:
        """Drops a reserved conversation whose response failed or was abandoned."""
        with contextlib.suppress(ApiError):
            self.store.delete(tenant, conversation_id)
