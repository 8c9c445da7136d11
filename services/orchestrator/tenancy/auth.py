"""Authentication as a gRPC server interceptor, so the HTTP facade (through Envoy) and native gRPC clients meet the
same rules. The key comes as `authorization: Bearer sk-sluice-…` (HTTP header or gRPC metadata). A missing or bad
key gets 401 — an OpenAI-shaped JSON body on the OpenAI facade, UNAUTHENTICATED on native methods — and an audit
event. Health checks and reflection are open. Results are cached for a few seconds, so a revoked key stops working
within `cache_ttl_s` on every replica."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.errors import ApiError
from services.common.telemetry import current_request, is_safe_request_id
from services.orchestrator.tenancy.audit import AuditLog
from services.orchestrator.tenancy.auth_failures import AuthFailureAudit
from services.orchestrator.tenancy.keys import KEY_PREFIX, key_id_of
from services.orchestrator.tenancy.principal import Principal, current_principal
from services.orchestrator.tenancy.store import TenantStore

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/sluice.v1.Edge/")  # /healthz, /readyz too
HTTP_SERVICES = ("/sluice.v1.OpenAI/", "/sluice.v1.VectorStores/")  # transcoded: errors as OpenAI JSON
CACHE_LIMIT = 10_000

ErrorRenderer = Callable[[grpc.aio.ServicerContext, str, ApiError], Awaitable[Any]]


def bearer_key(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _request_id(metadata: Any) -> str | None:
    return next((value for key, value in metadata or () if key == "x-request-id"), None)


def invalid_request_id() -> ApiError:
    return ApiError(400, "Invalid 'x-request-id' header: use 1 to 128 letters, digits and . _ : - only.",
                    "invalid_request_error", "x-request-id", "invalid_request_id")


def unauthorized(missing: bool) -> ApiError:
    if missing:
        return ApiError(401, "You didn't provide an API key. Provide it in the Authorization header "
                             "(Authorization: Bearer YOUR_KEY).", "invalid_request_error", None, "missing_api_key")
    return ApiError(401, "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key")


class KeyCache:
    """Recent authentication results by the key's SHA-256 (never the key itself)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal | None, float]] = {}

    def get(self, digest: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, digest: str, principal: Principal | None) -> None:
        if len(self._entries) >= CACHE_LIMIT:
            self._entries.clear()
        self._entries[digest] = (principal, time.monotonic() + self.ttl_s)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, store: TenantStore, audit_log: AuditLog | None, render_error: ErrorRenderer,
                 cache_ttl_s: float = 5.0) -> None:
        self._store = store
        self._audit = audit_log
        self._render_error = render_error  # the facade's OpenAI-shaped error response
        self._cache = KeyCache(cache_ttl_s)
        self._failures = AuthFailureAudit(audit_log)  # counted per key prefix per minute, not one row each

    async def authenticate(self, key: str) -> Principal | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        hit, principal = self._cache.get(digest)
        if not hit:
            principal = await asyncio.to_thread(self._store.authenticate, key)
            self._cache.put(digest, principal)
        return principal

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        metadata = details.invocation_metadata
        sent_id = _request_id(metadata)
        if sent_id is not None and not is_safe_request_id(sent_id):  # checked before the key: costs nothing
            return self._reject(handler, details.method, invalid_request_id())
        key = bearer_key(metadata)
        principal = await self.authenticate(key) if key else None
        if principal is None:
            prefix = KEY_PREFIX + key_id_of(key) if key and key_id_of(key) else None
            await self._audit_failure(details.method, metadata, prefix, missing=key is None)
            return self._reject(handler, details.method, unauthorized(missing=key is None))
        return _with_principal(handler, principal)

    async def _audit_failure(self, method: str, metadata: Any, prefix: str | None, missing: bool) -> None:
        await self._failures.record(method=method, reason="missing key" if missing else "invalid key",
                                    key_prefix=prefix, request_id=_request_id(metadata))

    def _reject(self, handler: Any, method: str, error: ApiError) -> Any:
        openai = method.startswith(HTTP_SERVICES)
        render = self._render_error

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if openai:
                return await render(context, _answer_id(context), error)
            await context.abort(error.grpc_code, error.message)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if openai:
                yield await render(context, _answer_id(context), error)
                return
            await context.abort(error.grpc_code, error.message)

        return _same_kind(handler, unary, stream)


def _answer_id(context: grpc.aio.ServicerContext) -> str:
    """The request id an error answer carries: the client's when safe, else the one telemetry gave the call."""
    sent = _request_id(context.invocation_metadata())
    if sent is not None and is_safe_request_id(sent):
        return sent
    state = current_request.get()
    return state.request_id if state is not None else ""


def _with_principal(handler: Any, principal: Principal) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        current_principal.set(principal)
        return await handler.unary_unary(request, context)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        current_principal.set(principal)
        async for response in handler.unary_stream(request, context):
            yield response

    return _same_kind(handler, unary, stream)


def _same_kind(handler: Any, unary: Callable, stream: Callable) -> Any:
    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, **serializers)
    raise TypeError("client-streaming methods are not served by the orchestrator")


