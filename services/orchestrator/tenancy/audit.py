"""The audit log of security-relevant events: keys created and revoked, authentication failures, limit rejections,
safety blocks, data purges and exports. An event names its actor, time and request id; a prompt appears only as its
SHA-256 unless the tenant opted in to storing the text."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from services.common.db import session_factory, write_detached
from services.orchestrator.tenancy.models import AuditRow

KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
TENANT_CREATED = "tenant.created"
TENANT_UPDATED = "tenant.updated"
AUTH_FAILED = "auth.failed"
FORBIDDEN = "auth.forbidden"
LIMIT_REJECTED = "limit.rejected"
SAFETY_BLOCKED = "safety.blocked"
DATA_PURGED = "data.purged"
DATA_EXPORTED = "data.exported"
DATA_DELETED = "data.deleted"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    actor: str
    tenant_id: str | None = None
    request_id: str | None = None
    prompt: str | None = None  # hashed unless `store_prompt_text`
    store_prompt_text: bool = False
    details: dict[str, Any] | None = None

    def row(self, at: datetime | None = None) -> AuditRow:
        return AuditRow(
            id=str(uuid.uuid4()), at=at or datetime.now(UTC), event=self.event, tenant_id=self.tenant_id,
            actor=self.actor, request_id=self.request_id,
            prompt_sha256=hashlib.sha256(self.prompt.encode()).hexdigest() if self.prompt is not None else None,
            prompt_text=self.prompt if self.prompt is not None and self.store_prompt_text else None,
            details=json.dumps(self.details or {}, sort_keys=True))


class AuditLog:
    """Writes events in their own transaction, off the event loop; a write that was started finishes even if the
    request that caused it is cancelled."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def write(self, event: AuditEvent) -> None:
        with self._sessions.begin() as session:
            session.add(event.row())

    async def record(self, event: AuditEvent) -> None:
        await write_detached(functools.partial(self.write, event), f"audit event {event.event}")

    def list(self, *, tenant_id: str | None = None, event: str | None = None, limit: int = 100) -> list[AuditRow]:
        with self._sessions() as session:
            return list_events(session, tenant_id=tenant_id, event=event, limit=limit)


def list_events(session: Session, *, tenant_id: str | None = None, event: str | None = None,
                limit: int = 100) -> list[AuditRow]:
    query = select(AuditRow).order_by(AuditRow.at.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(AuditRow.tenant_id == tenant_id)
    if event is not None:
        query = query.where(AuditRow.event == event)
    return list(session.scalars(query))
