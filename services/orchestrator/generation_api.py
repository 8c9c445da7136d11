"""What the generating endpoints share (chat completions, completions, responses): the lifecycle checks, the n
choices with their output guards, collecting a non-streamed answer, committing a stream only once its first event
has arrived, and the clean-up that stops generation and writes the usage record."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.api import httpbody_pb2

from services.common.errors import ApiError, internal
from services.orchestrator.chat_request import ChatRequest
from services.orchestrator.choices import ChoiceResult, merged, sibling
from services.orchestrator.generate import Finished, PreparedGeneration
from services.orchestrator.http_replies import error_response, last_user_text, send_headers
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.pipeline.pipeline import ChatPipeline, PipelineRun, tenant_of
from services.orchestrator.tenancy.metering import RequestMeter
from services.orchestrator.tools.retrieve_tool import request_tenant
from services.orchestrator.tools.runner import ToolRunEvent, ToolRunner

log = logging.getLogger(__name__)


class GenerationApi:
    """Base of the OpenAI facade's generating endpoints; the facade sets these in its constructor."""

    lifecycle: RequestLifecycle
    tools: ToolRunner
    pipeline: ChatPipeline

    @staticmethod
    async def _refusal(error: ApiError, meter: RequestMeter, context: grpc.aio.ServicerContext, request_id: str,
                       chat: ChatRequest | None) -> httpbody_pb2.HttpBody:
        """The error answer for a request refused before it ran (audited when the input guard blocked it)."""
        meter.fail(error.status)
        if error.code == "content_policy_violation" and error.details:
            await meter.safety_blocked("input_guard", error.details.get("categories", []), last_user_text(chat))
        return await error_response(context, request_id, error, await meter.headers())

    async def _admit(self, chat: ChatRequest, meter: RequestMeter, context: grpc.aio.ServicerContext,
                     request_id: str) -> tuple[ChatRequest, PreparedGeneration, PipelineRun]:
        tenant = tenant_of(context)
        request_tenant.set(tenant)  # server tools (e.g. `retrieve`) act as this tenant
        admitted = await self.lifecycle.admit(chat, meter, self.tools, tenant=tenant, request_id=request_id)
        return admitted.chat, admitted.prepared, admitted.run

    async def _collect(self, events: AsyncIterator[tuple[int, ToolRunEvent]], n: int,
                       run: PipelineRun) -> list[ChoiceResult]:
        """Every choice's events, for a non-streamed answer. Raises ApiError (a failure becomes the answer)."""
        results = [ChoiceResult() for _ in range(n)]
        try:
            async for index, event in events:
                results[index].take(event)
                if isinstance(event, Finished):
                    run.finished(event.reason, event.categories)
        except ApiError:
            raise
        except Exception:
            log.exception("request failed")
            raise internal() from None
        return results

    async def _start_stream(self, events: AsyncIterator[tuple[int, ToolRunEvent]],
                            context: grpc.aio.ServicerContext, request_id: str, headers: dict[str, str],
                            meter: RequestMeter, prepared: PreparedGeneration, run: PipelineRun,
                            ) -> tuple[AsyncIterator[tuple[int, ToolRunEvent]], httpbody_pb2.HttpBody | None]:
        """Waits for the first event before committing to a 200: a failure before any token is an HTTP error
        (returned as the refusal to send). Otherwise the headers go out and the events continue from the first."""
        try:
            first = await anext(events)
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else internal()
            if not isinstance(exc, ApiError):
                log.exception("request %s failed before its first token", request_id)
            meter.fail(error.status)
            return events, await error_response(context, request_id, error, headers)
        await send_headers(context, request_id, extra={**headers, **prepared.headers(), **run.headers()})

        async def resumed() -> AsyncIterator[tuple[int, ToolRunEvent]]:
            yield first
            async for item in events:
                yield item

        return resumed(), None

    @staticmethod
    def _stream_failure(exc: Exception, meter: RequestMeter, request_id: str) -> ApiError:
        """The error to report for a failure mid-stream (written as an SSE frame by the caller)."""
        error = exc if isinstance(exc, ApiError) else internal()
        if not isinstance(exc, ApiError):
            log.error("request %s failed mid-stream", request_id, exc_info=exc)
        meter.fail(error.status)
        return error

    @staticmethod
    async def _finish(events: AsyncIterator[Any] | None, prepared: PreparedGeneration | None,
                      meter: RequestMeter) -> None:
        if events is not None:
            await events.aclose()  # stops generation and drains the engine's last tokens into the account
        if prepared is not None:
            prepared.release()
        await meter.finish()

    def choice_events(self, chat: ChatRequest, prepared: PreparedGeneration, run: PipelineRun,
                      request_id: str) -> AsyncIterator[tuple[int, ToolRunEvent]]:
        """The request's `n` choices, each generation wrapped by the output guard, as (index, event)."""
        def choice(index: int) -> Callable[[], AsyncIterator[ToolRunEvent]]:
            generation = prepared if index == 0 else sibling(prepared, index)
            return lambda: self.pipeline.guard(self.tools.run(chat, generation, request_id), run, generation)

        return merged([choice(index) for index in range(chat.n)])
