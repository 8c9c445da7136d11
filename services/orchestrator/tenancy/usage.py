"""Usage records: one row per request, written in its own transaction when the request ends (also when the client
went away), and the per-tenant, per-day report built from them."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, case, func, select

from services.common.db import create_db_engine, session_factory, write_detached
from services.orchestrator.tenancy.models import UsageRow


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    tenant_id: str
    key_id: str | None
    user_id: str | None
    endpoint: str  # "chat.completions" | "chat.generate" | "conversations" | "embeddings"
    model: str
    deployment: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    status: str  # "ok" | "error" | "cancelled" | "rejected"
    http_status: int
    ttft_ms: float | None
    latency_ms: float
    metadata: dict[str, str] | None = None  # the request's OpenAI `metadata`

    def row(self, at: datetime | None = None) -> UsageRow:
        at = at or datetime.now(UTC)
        return UsageRow(id=str(uuid.uuid4()), request_id=self.request_id, tenant_id=self.tenant_id,
                        key_id=self.key_id, user_id=self.user_id, endpoint=self.endpoint, model=self.model,
                        deployment=self.deployment, prompt_tokens=self.prompt_tokens,
                        completion_tokens=self.completion_tokens, cached_prompt_tokens=self.cached_prompt_tokens,
                        status=self.status, http_status=self.http_status, ttft_ms=self.ttft_ms,
                        latency_ms=self.latency_ms, day=at.strftime("%Y-%m-%d"), created_at=at,
                        request_metadata=json.dumps(self.metadata, ensure_ascii=False) if self.metadata else None)


@dataclass(frozen=True, slots=True)
class UsageLine:
    tenant_id: str
    day: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    errors: int
    cancelled: int
    rejected: int


class UsageLog:
    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def write(self, record: UsageRecord) -> None:
        with self._sessions.begin() as session:
            session.add(record.row())

    async def record(self, record: UsageRecord) -> None:
        """Writes off the event loop; a request cancelled mid-write still gets its row."""
        await write_detached(functools.partial(self.write, record), f"the usage record of request {record.request_id}")

    def report(self, *, tenant_id: str | None = None, since_day: str | None = None) -> list[UsageLine]:
        def status_count(status: str):
            return func.sum(case((UsageRow.status == status, 1), else_=0))

        query = (select(UsageRow.tenant_id, UsageRow.day, UsageRow.model, func.count(),
                        func.sum(UsageRow.prompt_tokens), func.sum(UsageRow.completion_tokens),
                        func.sum(UsageRow.cached_prompt_tokens), status_count("error"), status_count("cancelled"),
                        status_count("rejected"))
                 .group_by(UsageRow.tenant_id, UsageRow.day, UsageRow.model)
                 .order_by(UsageRow.tenant_id, UsageRow.day, UsageRow.model))
        if tenant_id is not None:
            query = query.where(UsageRow.tenant_id == tenant_id)
        if since_day is not None:
            query = query.where(UsageRow.day >= since_day)
        with self._sessions() as session:
            return [UsageLine(*(value if value is not None else 0 for value in row))
                    for row in session.execute(query)]

    def records(self, *, tenant_id: str | None = None) -> list[UsageRow]:
        query = select(UsageRow).order_by(UsageRow.created_at)
        if tenant_id is not None:
            query = query.where(UsageRow.tenant_id == tenant_id)
        with self._sessions() as session:
            return list(session.scalars(query))


def usage_rows_of(db_url: str, tenant: str) -> list[UsageRow]:
    """A tenant's usage rows read through a short-lived engine (benchmarks and tests checking what was billed)."""
    engine = create_db_engine(db_url)
    try:
        return UsageLog(engine).records(tenant_id=tenant)
    finally:
        engine.dispose()
