"""The input guard stage: the safety service's CheckInput over the request's messages before anything reaches the
model. BLOCK → 400 content_policy_violation; REDACT → the model sees the redacted text (and the response is never
cached); ALLOW → unchanged. Also screens retrieved passages (indirect prompt injection) for the retrieve stage."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from sluice.v1 import chat_pb2, safety_pb2, safety_pb2_grpc

from services.common.errors import ApiError
from services.orchestrator.chat_request import ChatMessage
from services.orchestrator.pipeline.stages import Stage, run_stage

log = logging.getLogger(__name__)


TENANT_HEADER = "x-sluice-tenant"
# A check of more text than this may time out for its own size: its timeout is not held against the service.
LARGE_CHECK_CHARS = 8192


def content_policy_violation(categories: list[str]) -> ApiError:
    named = f" ({', '.join(categories)})" if categories else ""
    return ApiError(400, f"Your request was rejected as a result of our safety system{named}. Please revise the "
                         "messages and try again.", "invalid_request_error", "messages", "content_policy_violation",
                    details={"stage": "input_guard", "categories": categories})


def policy_id_for(tenant: str) -> str:
    return "" if tenant == "default" else tenant  # empty: the safety service's default policy


@dataclass(slots=True)
class InputCheck:
    messages: list[ChatMessage]  # redacted where the verdict said so
    pii: bool                    # PII was found (redacted or flagged): the response must not be cached
    categories: list[str]        # triggered categories


class InputGuard:
    def __init__(self, stage: Stage, stub: safety_pb2_grpc.SafetyStub) -> None:
        self.stage = stage
        self.stub = stub

    def _check(self, request: safety_pb2.CheckInputRequest, tenant: str):
        # the tenant lets the safety service bound each tenant's share of its work
        return self.stub.CheckInput(request, timeout=self.stage.spec.timeout_s,
                                    metadata=((TENANT_HEADER, tenant),))

    async def check(self, messages: list[ChatMessage], *, tenant: str, request_id: str,
                    degraded: list[str]) -> InputCheck:
        """Raises ApiError: 400 when blocked, 503 when the stage is down and fails closed."""
        request = safety_pb2.CheckInputRequest(
            messages=[chat_pb2.Message(role=m.role, content=m.content) for m in messages],
            policy_id=policy_id_for(tenant), request_id=request_id)
        large = sum(len(m.content) for m in messages) > LARGE_CHECK_CHARS
        verdict = await run_stage(self.stage, lambda: self._check(request, tenant), degraded, large=large)
        if verdict is None:  # fail open (a tenant that chose "flag"): unchecked, and never cached
            return InputCheck(list(messages), pii=True, categories=[])
        triggered = [c.category for c in verdict.categories if c.triggered]
        if verdict.action == safety_pb2.ACTION_BLOCK:
            log.info("request %s: input blocked (%s)", request_id, ",".join(triggered))  # never the text
            raise content_policy_violation(triggered)
        pii = any(c.startswith("pii.") for c in triggered) or any(s.category.startswith("pii.") for s in verdict.spans)
        if verdict.action == safety_pb2.ACTION_REDACT and len(verdict.redacted_text) == len(messages):
            messages = [m if m.content == text else dataclasses.replace(m, content=text)
                        for m, text in zip(messages, verdict.redacted_text, strict=True)]
            pii = True
        return InputCheck(list(messages), pii, triggered)

    async def screen(self, passages: list[str], *, tenant: str, request_id: str) -> list[str | None]:
        """Each passage checked as a `tool` message (where indirect injection arrives): its text (redacted if need
        be), or None when the safety service would block it. Raises StageDown when the service is unavailable."""

        async def one(text: str) -> str | None:
            request = safety_pb2.CheckInputRequest(messages=[chat_pb2.Message(role="tool", content=text)],
                                                   policy_id=policy_id_for(tenant), request_id=request_id)
            verdict = await self.stage.call(lambda: self._check(request, tenant), large=len(text) > LARGE_CHECK_CHARS)
            if verdict.action == safety_pb2.ACTION_BLOCK:
                log.info("request %s: dropped a retrieved passage (%s)", request_id,
                         ",".join(c.category for c in verdict.categories if c.triggered))
                return None
            if verdict.action == safety_pb2.ACTION_REDACT and verdict.redacted_text:
                return verdict.redacted_text[0]
            return text

        return list(await asyncio.gather(*(one(p) for p in passages)))
