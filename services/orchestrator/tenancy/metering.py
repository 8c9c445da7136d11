"""Admission and metering of one request: the tier's model list (403), rate limits and quotas (429 with
Retry-After), the engine priority, the `x-ratelimit-*` headers, and — whatever happens — one usage record.

    meter = metering.begin(principal, endpoint="chat.completions", request_id=rid)
    meter.activate()                               # generation rounds add their tokens to meter.account
    priority = await meter.admit(model, prompt_tokens, max_tokens)   # reserves prompt + max_tokens
    ...
    await meter.finish()                           # reconciles the reservation, releases the slot, writes usage
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from services.common.errors import ApiError, unavailable
from services.orchestrator.accounting import TokenAccount, current_account
from services.orchestrator.tenancy import audit
from services.orchestrator.tenancy.audit import AuditEvent, AuditLog
from services.orchestrator.tenancy.limits import (
    NEVER,
    Ask,
    Bucket,
    BucketState,
    Lease,
    Limiter,
    Quota,
    Settlement,
    Verdict,
)
from services.orchestrator.tenancy.principal import Principal
from services.orchestrator.tenancy.usage import UsageLog, UsageRecord

log = logging.getLogger(__name__)

# Engine priority = tier priority × PRIORITY_STEP − the tenant's requests already in flight: paid tiers first, and
# within a tier the tenant with fewer requests running goes next (round-robin between tenants under contention).
PRIORITY_STEP = 1000


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


class RequestLimits:
    """The buckets, quotas and leases that apply to one principal's request."""

    def __init__(self, principal: Principal, now: datetime) -> None:
        self.rpm: list[Bucket] = []
        self.tpm: list[Bucket] = []
        self.daily: list[Quota] = []
        self.leases: list[Lease] = []
        self.tenant_lease_key = f"t:{principal.tenant_id}:conc"
        day = now.strftime("%Y-%m-%d")
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        for scope, prefix, limits in (("tenant", f"t:{principal.tenant_id}", principal.tier.limits),
                                      ("key", f"k:{principal.key_id}", principal.key_limits)):
            if limits.rpm:
                self.rpm.append(Bucket(f"{prefix}:rpm", limits.rpm, f"requests per minute ({scope})"))
            if limits.tpm:
                self.tpm.append(Bucket(f"{prefix}:tpm", limits.tpm, f"tokens per minute ({scope})"))
            if limits.tokens_per_day:
                self.daily.append(Quota(f"{prefix}:tpd:{day}", limits.tokens_per_day, f"tokens per day ({scope})",
                                        midnight))
            if limits.max_concurrent:
                self.leases.append(Lease(f"{prefix}:conc", limits.max_concurrent, f"concurrent requests ({scope})"))

    def ask(self, tokens: int, lease_id: str) -> Ask:
        return Ask(buckets=[(b, 1) for b in self.rpm] + [(b, tokens) for b in self.tpm],
                   quotas=[(q, tokens) for q in self.daily], leases=list(self.leases), lease_id=lease_id)

    def settlement(self, refund: float, lease_id: str) -> Settlement:
        return Settlement(refunds=[(b, refund) for b in self.tpm] + [(q, refund) for q in self.daily],
                          releases=list(self.leases), lease_id=lease_id)


def rate_limit_headers(limits: RequestLimits, states: dict[str, BucketState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the tighter of the key's and the tenant's buckets."""
    headers: dict[str, str] = {}
    for kind, buckets in (("requests", limits.rpm), ("tokens", limits.tpm)):
        known = [states[b.key] for b in buckets if b.key in states]
        if not known:
            continue
        tightest = min(known, key=lambda state: state.remaining)
        headers[f"x-ratelimit-limit-{kind}"] = str(tightest.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(tightest.remaining)))
        headers[f"x-ratelimit-reset-{kind}"] = _duration(tightest.reset_s)
    return headers


def _refusal(verdict: Verdict, cost: int) -> ApiError:
    limit = verdict.refused_by
    assert limit is not None
    retry = None if verdict.retry_after == NEVER else max(verdict.retry_after, 0.001)
    if isinstance(limit, Quota):
        if retry is None:
            return ApiError(429, f"This request needs {cost} tokens, more than the quota of {limit.limit} "
                                 f"{limit.label}.", "insufficient_quota", None, "insufficient_quota")
        return ApiError(429, f"You exceeded your quota of {limit.limit} {limit.label}; it resets at 00:00 UTC.",
                        "insufficient_quota", None, "insufficient_quota", retry)
    if isinstance(limit, Lease):
        return ApiError(429, f"Too many requests in flight: the limit is {limit.limit} {limit.label}. "
                             "Retry when one finishes.", "requests", None, "rate_limit_exceeded", retry)
    kind = "requests" if ":rpm" in limit.key else "tokens"
    if retry is None:
        return ApiError(429, f"Request too large: it needs {cost} tokens (prompt + max_tokens) and the limit is "
                             f"{limit.limit} {limit.label}. Reduce the prompt or max_tokens.", kind, None,
                        "rate_limit_exceeded")
    return ApiError(429, f"Rate limit reached: {limit.limit} {limit.label}. Please try again in "
                         f"{_duration(retry)}.", kind, None, "rate_limit_exceeded", retry)


def _limit_kind(limit: Bucket | Quota | Lease) -> str:
    """The metric label of a limit: rpm, tpm, concurrency or daily_tokens."""
    for marker, kind in ((":rpm", "rpm"), (":tpm", "tpm"), (":conc", "concurrency"), (":tpd", "daily_tokens")):
        if marker in limit.key:
            return kind
    return "other"


def _status(http_status: int, cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    if http_status == 429:
        return "rejected"
    return "ok" if http_status < 400 else "error"


class MeteredRequest:
    def __init__(self, metering: Metering, principal: Principal, endpoint: str, request_id: str) -> None:
        self._metering = metering
        self.principal = principal
        self.endpoint = endpoint
        self.request_id = request_id
        self.model = ""
        self.user: str | None = None  # the request's end user (OpenAI's `user`), for per-user export and deletion
        self.metadata: dict[str, str] | None = None  # the request's OpenAI `metadata`, kept with its usage record
        self.account = TokenAccount()
        self.http_status = 200
        self.cancelled = False
        self._started = time.monotonic()
        self._limits = RequestLimits(principal, datetime.now(UTC))
        self._lease_id = uuid.uuid4().hex
        self._states: dict[str, BucketState] = {}
        self._reserved: int | None = None
        self._finished = False

    def activate(self) -> None:
        """Generation rounds in this task (and the tasks it starts) count their tokens into `account`."""
        current_account.set(self.account)

    @property
    def rate_limit_headers(self) -> dict[str, str]:
        return rate_limit_headers(self._limits, self._states)

    async def headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers; for a request refused before admission, the current state of the buckets."""
        if not self._states:
            try:
                self._states = await self._metering.limiter.peek(self._limits.rpm + self._limits.tpm, time.time())
            except Exception:
                log.exception("could not read the rate-limit state")
        return self.rate_limit_headers

    async def admit(self, model: str, prompt_tokens: int, max_tokens: int) -> int:
        """Checks the tier's models and every limit; reserves prompt + max_tokens. Returns the engine priority.
        Raises ApiError 403 or 429 (after writing the audit event)."""
        self.model = model
        tier = self.principal.tier
        if not tier.allows(model):
            await self._metering.audit_event(AuditEvent(
                audit.FORBIDDEN, self.principal.actor, self.principal.tenant_id, self.request_id,
                details={"model": model, "tier": tier.name}))
            raise ApiError(403, f"The model `{model}` is not available on the {tier.name} tier.",
                           "invalid_request_error", "model", "model_not_allowed")
        cost = prompt_tokens + max_tokens
        try:
            verdict = await self._metering.limiter.admit(self._limits.ask(cost, self._lease_id), time.time())
        except Exception as exc:  # e.g. Redis unreachable: fail closed, a request must not skip its limits
            log.warning("rate limits unavailable (%s): refusing request %s", type(exc).__name__, self.request_id)
            raise unavailable("Rate limiting is temporarily unavailable; retry shortly.", retry_after=1.0) from exc
        self._states = verdict.states
        if not verdict.admitted:
            error = _refusal(verdict, cost)
            label = verdict.refused_by.label if verdict.refused_by else ""
            if self._metering.on_rejected is not None and verdict.refused_by is not None:
                self._metering.on_rejected(self.principal.tenant_id, _limit_kind(verdict.refused_by))
            await self._metering.audit_event(AuditEvent(
                audit.LIMIT_REJECTED, self.principal.actor, self.principal.tenant_id, self.request_id,
                details={"limit": label, "requested_tokens": cost, "model": model}))
            raise error
        self._reserved = cost
        in_flight = verdict.holders.get(self._limits.tenant_lease_key, 0)
        return tier.priority * PRIORITY_STEP - min(in_flight, PRIORITY_STEP - 1)

    def fail(self, http_status: int) -> None:
        self.http_status = http_status

    async def safety_blocked(self, stage: str, categories: list[str], prompt: str | None) -> None:
        """Audits a refusal by a safety stage: the categories and request id, the prompt as a hash (as text only
        for tenants that opted in)."""
        await self._metering.audit_event(AuditEvent(
            audit.SAFETY_BLOCKED, self.principal.actor, self.principal.tenant_id, self.request_id, prompt=prompt,
            store_prompt_text=self.principal.store_prompt_text,
            details={"stage": stage, "categories": categories, "model": self.model}))

    async def finish(self) -> UsageRecord | None:
        """Reconciles the reservation with the tokens actually used, frees the concurrency slot and writes the usage
        record. Idempotent."""
        if self._finished:
            return None
        self._finished = True
        if self._reserved is not None:
            refund = self._reserved - self.account.total_tokens
            try:
                await self._metering.limiter.settle(self._limits.settlement(refund, self._lease_id), time.time())
            except Exception:  # the lease expires on its own; the tokens stay charged
                log.exception("could not settle the limits of request %s", self.request_id)
        now = time.monotonic()
        first = self.account.first_token_at
        record = UsageRecord(
            request_id=self.request_id, tenant_id=self.principal.tenant_id, key_id=self.principal.key_id,
            user_id=self.user or self.principal.user_id, endpoint=self.endpoint, model=self.model,
            deployment=self.account.deployment, prompt_tokens=self.account.prompt_tokens,
            completion_tokens=self.account.completion_tokens, cached_prompt_tokens=self.account.cached_prompt_tokens,
            status=_status(self.http_status, self.cancelled), http_status=self.http_status,
            ttft_ms=(first - self._started) * 1000 if first is not None else None,
            latency_ms=(now - self._started) * 1000, metadata=self.metadata)
        if self._metering.usage is not None:
            await self._metering.usage.record(record)
        return record


class Metering:
    def __init__(self, limiter: Limiter, usage: UsageLog | None = None, audit_log: AuditLog | None = None,
                 on_rejected: Callable[[str, str], None] | None = None) -> None:
        self.limiter = limiter
        self.usage = usage
        self.audit = audit_log
        self.on_rejected = on_rejected  # (tenant, limit label): e.g. a metrics counter

    def begin(self, principal: Principal, *, endpoint: str, request_id: str) -> MeteredRequest:
        return MeteredRequest(self, principal, endpoint, request_id)

    async def audit_event(self, event: AuditEvent) -> None:
        if self.audit is not None:
            await self.audit.record(event)

    async def close(self) -> None:
        await self.limiter.close()


class UnmeteredRequest:
    """The stand-in when no principal is known (an orchestrator built without tenancy, as in unit tests): admits
    everything at priority 0 and records nothing."""

    def __init__(self) -> None:
        self.account = TokenAccount()
        self.model = ""
        self.user: str | None = None
        self.metadata: dict[str, str] | None = None
        self.http_status = 200
        self.cancelled = False
        self.rate_limit_headers: dict[str, str] = {}

    def activate(self) -> None:
        current_account.set(self.account)

    async def headers(self) -> dict[str, str]:
        return {}

    async def admit(self, model: str, prompt_tokens: int, max_tokens: int) -> int:
        self.model = model
        return 0

    def fail(self, http_status: int) -> None:
        self.http_status = http_status

    async def safety_blocked(self, stage: str, categories: list[str], prompt: str | None) -> None:
        return None

    async def finish(self) -> None:
        return None


def begin_request(metering: Metering | None, principal: Principal | None, *, endpoint: str,
                  request_id: str) -> MeteredRequest | UnmeteredRequest:
    if metering is None or principal is None:
        return UnmeteredRequest()
    return metering.begin(principal, endpoint=endpoint, request_id=request_id)


RequestMeter = MeteredRequest | UnmeteredRequest
