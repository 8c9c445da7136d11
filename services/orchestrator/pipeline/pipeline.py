"""The chat pipeline as declared in pipelines/stages.yaml: input guard → retrieve → generate → output guard.

The facade and the native Chat API call it at two points: `before_generate` (input guard and retrieve: may refuse
the request or rewrite its messages) and `guard` (wraps the generation's event stream with the output guard).
Generation itself stays with Generator / ToolRunner. A stage that is not declared does not run."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from sluice.v1 import retrieval_pb2_grpc, safety_pb2_grpc

from services.common.circuit_breaker import BreakerState
from services.common.errors import ApiError, invalid
from services.common.settings import Settings
from services.common.telemetry import client_interceptors
from services.orchestrator.catalog import ModelCatalog
from services.orchestrator.chat_request import ChatRequest
from services.orchestrator.generate import PreparedGeneration
from services.orchestrator.pipeline.config import PipelineConfig, default_config, load_pipeline_config
from services.orchestrator.pipeline.input_guard import InputGuard
from services.orchestrator.pipeline.observe import note_request, observe_generation, stage
from services.orchestrator.pipeline.output_guard import OutputGuard
from services.orchestrator.pipeline.retrieve import RetrieveStage
from services.orchestrator.pipeline.stages import DEGRADED_HEADER, Stage, StageDown
from services.orchestrator.tenancy.principal import current_principal
from services.safety.detectors.pii import find_pii

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
# Above this the PII pre-scan of an early start costs the event loop milliseconds (~0.3 ms per 1,000 characters):
# such a prompt waits for the input guard as before.
EARLY_START_MAX_CHARS = 4000


def tenant_of(context: grpc.aio.ServicerContext | None = None) -> str:
    """The tenant of the API key the auth interceptor accepted for this call. A client cannot choose its tenant:
    an `x-sluice-tenant` header from outside is ignored (it is only used between Sluice's own services)."""
    principal = current_principal.get()
    return principal.tenant_id if principal is not None else DEFAULT_TENANT


@dataclass(slots=True)
class PipelineRun:
    """One request's way through the pipeline: the (possibly rewritten) request and what the stages reported."""

    chat: ChatRequest
    tenant: str
    request_id: str
    degraded: list[str] = field(default_factory=list)
    citations: list[dict] | None = None  # set when the request asked for retrieval
    pii: bool = False
    blocked_by_output: list[str] | None = None  # the output guard stopped the answer (its categories)
    whole_words: bool = False  # the output guard runs: it releases text up to the last whitespace only

    def finished(self, reason: str, categories: list[str]) -> None:
        if reason == "content_filter":
            self.blocked_by_output = categories

    def apply(self, prepared: PreparedGeneration, priority: int) -> None:
        """Completes the plan with what the stages found (the tenant they ran for; never cache content the input
        guard found PII in) and the engine priority metering gave."""
        prepared.admitted(tenant=self.tenant, priority=priority, cacheable=not self.pii, whole_words=self.whole_words)

    def headers(self) -> dict[str, str]:
        return {DEGRADED_HEADER: ",".join(self.degraded)} if self.degraded else {}


class ChatPipeline:
    def __init__(self, config: PipelineConfig | None = None, *, input_guard: InputGuard | None = None,
                 retrieve: RetrieveStage | None = None, output_guard: OutputGuard | None = None,
                 channels: list[grpc.aio.Channel] | None = None) -> None:
        self.config = config or default_config()
        self.input_guard = input_guard
        self.retrieve = retrieve
        self.output_guard = output_guard
        self._channels = channels or []

    @classmethod
    def from_settings(cls, settings: Settings, catalog: ModelCatalog,
                      config: PipelineConfig | None = None) -> ChatPipeline:
        """Builds the declared stages with one channel per target address (call inside the server's loop)."""
        config = config or load_pipeline_config(settings)
        channels: dict[str, grpc.aio.Channel] = {}

        def channel(address: str) -> grpc.aio.Channel:
            if address not in channels:
                channels[address] = grpc.aio.insecure_channel(address, interceptors=client_interceptors())
            return channels[address]

        input_guard = retrieve = output_guard = None
        if (spec := config.get("input_guard")) is not None:
            input_guard = InputGuard(Stage(spec), safety_pb2_grpc.SafetyStub(channel(spec.address)))
        if (spec := config.get("retrieve")) is not None:
            retrieve = RetrieveStage(Stage(spec), retrieval_pb2_grpc.RetrievalStub(channel(spec.address)),
                                     screen=input_guard, count_tokens=_token_counter(catalog))
        if (spec := config.get("output_guard")) is not None:
            output_guard = OutputGuard(Stage(spec), safety_pb2_grpc.SafetyStub(channel(spec.address)))
        log.info("chat pipeline: %s", " → ".join(config.names))
        return cls(config, input_guard=input_guard, retrieve=retrieve, output_guard=output_guard,
                   channels=list(channels.values()))

    def stages(self) -> list[Stage]:
        """The declared stages that call a service (each has its circuit breaker)."""
        return [part.stage for part in (self.input_guard, self.retrieve, self.output_guard) if part is not None]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def may_start_early(self, chat: ChatRequest) -> bool:
        """Whether the generation may start while the input guard runs (lifecycle.py): only when the guard is the
        one stage before it and is expected to leave the prompt as it is. Retrieval adds passages after the guard;
        a prompt holding PII would be redacted, and the model must not see it, not even in a discarded prefill."""
        if self.input_guard is None or chat.retrieval is not None:
            return False
        if not self.input_guard.stage.spec.options.get("overlap_generation", True):
            return False
        if sum(len(m.content) for m in chat.messages) > EARLY_START_MAX_CHARS:
            return False
        return not any(find_pii(m.content) for m in chat.messages if m.content)

    def plan_for(self, prepared: PreparedGeneration, *, tenant: str, priority: int) -> None:
        """What the stages will add to a plan, set before they run for a generation that starts early. Whether the
        answer may be cached is left to `PipelineRun.apply` once the guard has spoken."""
        prepared.admitted(tenant=tenant, priority=priority, cacheable=True, whole_words=self.output_guard is not None)

    async def before_generate(self, chat: ChatRequest, *, tenant: str, request_id: str) -> PipelineRun:
        """Input guard, then retrieve. Raises ApiError: 400 (blocked, retrieval not available), 503 (a fail-closed
        stage is down)."""
        run = PipelineRun(chat, tenant, request_id, whole_words=self.output_guard is not None)
        note_request(chat.model, tenant)
        if chat.retrieval is not None and self.retrieve is None:
            raise invalid("'retrieval' is not available: this deployment does not run the retrieve stage.",
                          "retrieval", "unsupported_parameter")
        guard = self.output_guard
        if guard is not None and not guard.stage.fail_open and guard.stage.breaker.state is BreakerState.OPEN:
            # the answer could not be moderated: refuse now instead of generating it
            raise guard.stage.failed(StageDown(guard.stage.name, "circuit open",
                                               max(1.0, guard.stage.breaker.retry_after())))
        if self.input_guard is not None:
            with stage("input_guard"):
                checked = await self.input_guard.check(chat.messages, tenant=tenant, request_id=request_id,
                                                       degraded=run.degraded)
            run.pii = checked.pii
            if checked.messages != chat.messages:
                chat = run.chat = _with_messages(chat, checked.messages)
        if chat.retrieval is not None and self.retrieve is not None:
            with stage("retrieve", {"sluice.collections": list(chat.retrieval.collections)}):
                result = await self.retrieve.run(chat, tenant=tenant, request_id=request_id, degraded=run.degraded)
            run.chat, run.citations = result.chat, result.citations
        return run

    def guard(self, events: AsyncIterator[Any], run: PipelineRun,
              prepared: PreparedGeneration) -> AsyncIterator[Any]:
        """The generation wrapped by the output guard, each in its span (`generate`, `output_guard`)."""
        output_guard = self.output_guard

        def moderated(generated: AsyncIterator[Any]) -> AsyncIterator[Any]:
            return output_guard.guard(generated, tenant=run.tenant, request_id=run.request_id,
                                      prompt_tokens=lambda: len(prepared.prompt_ids), degraded=run.degraded,
                                      on_redact=lambda: setattr(prepared, "output_redacted", True))

        return observe_generation(events, run.chat, prepared, run.tenant,
                                  moderated if output_guard is not None else None)


def _with_messages(chat: ChatRequest, messages: list) -> ChatRequest:
    return dataclasses.replace(chat, messages=messages)


def _token_counter(catalog: ModelCatalog) -> Callable[[str, str], int]:
    def count(model: str, text: str) -> int:
        try:
            return len(catalog.get(model).tokenizer.encode(text))
        except ApiError:  # unknown model or `auto`: an estimate; routing reports the real error later
            return max(1, len(text) // 3)

    return count
