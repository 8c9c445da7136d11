"""The safety service's gRPC server (CheckInput, CheckOutput) + health + reflection, built by a factory."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

import grpc
from sluice.v1 import safety_pb2, safety_pb2_grpc

from services.common.metrics import record_safety
from services.common.service_main import run_service, server_options, start_serving, wait_for_stop_signal
from services.common.settings import Settings
from services.common.telemetry import server_interceptors
from services.safety.checker import check_messages
from services.safety.classifier_batch import BatchingClassifier
from services.safety.classifier_client import Classifier, ClassifierUnavailable, TritonClassifier
from services.safety.policy import PolicyStore, PolicyUnavailable, SafetyPolicy, policy_to_dict
from services.safety.policy_db import store_for_url
from services.safety.stream_guard import GuardDecision, StreamGuard
from services.safety.verdict import category_proto, span_proto
from services.safety.window_check import WindowCheck
from services.safety.work_limits import TenantBusy, TenantGate, max_check_chars, tenant_concurrency

log = logging.getLogger("sluice.safety")

TENANT_HEADER = "x-sluice-tenant"
SERVICE_NAME = safety_pb2.DESCRIPTOR.services_by_name["Safety"].full_name


def _decision_proto(decision: GuardDecision) -> safety_pb2.OutputDecision:
    return safety_pb2.OutputDecision(action=int(decision.action), text=decision.text,
                                     categories=[category_proto(c) for c in decision.categories],
                                     spans=[span_proto(f) for f in decision.findings], final=decision.final)


def _tenant_of(context: grpc.aio.ServicerContext, policy_id: str) -> str:
    """The calling tenant, as the orchestrator names it in `x-sluice-tenant` (else the policy it asked for)."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_HEADER and value:
            return value
    return policy_id or "default"


class SafetyService(safety_pb2_grpc.SafetyServicer):
    def __init__(self, classifier: Classifier, policies: PolicyStore, max_chars: int | None = None,
                 tenant_gate: TenantGate | None = None) -> None:
        self.classifier = classifier
        self.window_classifier = BatchingClassifier(classifier)  # output windows of all streams, batched
        self.policies = policies
        self.max_chars = max_chars or max_check_chars()  # the text one check may classify
        self.tenant_gate = tenant_gate or TenantGate(tenant_concurrency())  # checks in flight per tenant

    async def _policy(self, policy_id: str, request_id: str, context: grpc.aio.ServicerContext) -> SafetyPolicy:
        try:
            return await self.policies.get(policy_id)
        except PolicyUnavailable as exc:  # fail closed: the orchestrator answers 503
            log.warning("request %s: %s", request_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the safety policy is unavailable")
            raise  # abort raises; this only tells type checkers so

    async def close(self) -> None:
        await self.policies.close()
        await self.window_classifier.close()
        await self.classifier.close()

    async def CheckInput(self, request: safety_pb2.CheckInputRequest,
                         context: grpc.aio.ServicerContext) -> safety_pb2.Verdict:
        started = time.perf_counter()
        chars = sum(len(m.content) for m in request.messages)
        if chars > self.max_chars:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{chars} characters to check; at most {self.max_chars} are checked per request")
        tenant = _tenant_of(context, request.policy_id)
        try:
            with self.tenant_gate.enter(tenant):
                policy = await self._policy(request.policy_id, request.request_id, context)
                verdict = await check_messages(self.classifier, policy,
                                               [(m.role, m.content) for m in request.messages])
        except TenantBusy:
            log.warning("request %s: tenant %s has %d checks in flight", request.request_id, tenant,
                        self.tenant_gate.limit)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many checks in flight for this tenant")
        except ClassifierUnavailable as exc:
            log.warning("request %s: classifier unavailable: %s", request.request_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the safety classifier is unavailable")
        record_safety("input", verdict.action.name.lower(), verdict.triggered, time.perf_counter() - started)
        if verdict.triggered:  # ids and categories only, never the text
            log.info("request %s: %s %s (%.1f ms)", request.request_id, verdict.action.name,
                     ",".join(verdict.triggered), (time.perf_counter() - started) * 1000)
        return verdict.to_proto()

    async def CheckOutput(self, request_iterator: AsyncIterator[safety_pb2.OutputChunk],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[safety_pb2.OutputDecision]:
        guard: StreamGuard | None = None
        request_id = ""
        try:
            async for chunk in request_iterator:
                if guard is None and chunk.windowed:
                    async for decision in self._windowed(chunk, request_iterator, context):
                        yield decision
                    return
                if guard is None:
                    request_id = chunk.request_id
                    guard = StreamGuard(self.classifier, await self._policy(chunk.policy_id, request_id, context))
                decision = await guard.feed(chunk.text)
                record_safety("output", decision.action.name.lower(),
                              [c.category for c in decision.categories if c.triggered] or
                              [f.category for f in decision.findings])
                yield _decision_proto(decision)
                if guard.stopped:
                    log.info("request %s: output stopped (%s)", request_id,
                             ",".join(c.category for c in decision.categories))
                    return
            if guard is not None:
                yield _decision_proto(await guard.finish())
        except ClassifierUnavailable as exc:
            log.warning("request %s: classifier unavailable: %s", request_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the safety classifier is unavailable")

    async def _windowed(self, first: safety_pb2.OutputChunk, rest: AsyncIterator[safety_pb2.OutputChunk],
                        context: grpc.aio.ServicerContext) -> AsyncIterator[safety_pb2.OutputDecision]:
        """Windowed mode: the policy first, then one classifier verdict per window of released text."""
        request_id = first.request_id
        policy = await self._policy(first.policy_id, request_id, context)
        yield safety_pb2.OutputDecision(action=safety_pb2.ACTION_ALLOW,
                                        policy_json=json.dumps(policy_to_dict(policy)))
        check = WindowCheck(self.window_classifier, policy)
        self.window_classifier.open_streams += 1
        try:
            async for chunk in rest:
                decision = await check.check(chunk.text)
                if check.stopped:
                    categories = [c.category for c in decision.categories]
                    record_safety("output", "stop", categories)
                    log.info("request %s: output stopped (%s)", request_id, ",".join(categories))
                    yield _decision_proto(decision)
                    return
                yield _decision_proto(decision)
        except ClassifierUnavailable as exc:
            log.warning("request %s: classifier unavailable: %s", request_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the safety classifier is unavailable")
        finally:
            self.window_classifier.open_streams -= 1
        yield safety_pb2.OutputDecision(action=safety_pb2.ACTION_ALLOW, final=True)


async def create_server(settings: Settings, address: str | None = None, classifier: Classifier | None = None,
                        policies: PolicyStore | None = None) -> tuple[grpc.aio.Server, int, SafetyService]:
    """Builds and starts the server. `address` may use port 0 (tests); returns the bound port. Policies come from
    the database at Settings.db_url unless a store is given."""
    service = SafetyService(classifier or TritonClassifier(settings.triton_grpc_urls),  # any replica
                            policies or store_for_url(settings.db_url))
    server = grpc.aio.server(interceptors=server_interceptors("safety", settings),
                             options=server_options(16 * 1024 * 1024))
    safety_pb2_grpc.add_SafetyServicer_to_server(service, server)
    port = await start_serving(server, address or f"{settings.host}:{settings.safety_port}", (SERVICE_NAME,),
                               "safety service")
    return server, port, service


async def serve(settings: Settings, grace_seconds: float) -> None:
    server, port, service = await create_server(settings)
    log.info("safety service listening on %s:%d", settings.host, port)
    await wait_for_stop_signal()
    await server.stop(grace_seconds)
    await service.close()


def main() -> None:
    run_service("Sluice safety service", serve, default_grace=5.0,
                grace_help="seconds in-flight checks get at shutdown")


if __name__ == "__main__":
    main()
