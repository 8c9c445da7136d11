"""Data retention and per-user data rights: the purge job (each tenant's `retention_days`) and the export and
deletion of one user's conversations and usage records. Every run leaves an audit event (counts, never content)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select

from services.common.db import session_factory
from services.orchestrator.conversations.models import ConversationRow, MessageRow
from services.orchestrator.tenancy import audit
from services.orchestrator.tenancy.models import AuditRow, TenantRow, UsageRow


def purge_expired(engine: Engine, now: datetime | None = None, actor: str = "purge") -> dict[str, dict[str, int]]:
    """Deletes conversations (with their messages), usage records and audit events older than each tenant's
    retention. Returns {tenant: {table: rows deleted}}; tenants without a retention are left alone."""
    now = now or datetime.now(UTC)
    sessions = session_factory(engine)
    report: dict[str, dict[str, int]] = {}
    with sessions() as session:
        tenants = [(t.id, t.retention_days) for t in session.scalars(
            select(TenantRow).where(TenantRow.retention_days.is_not(None)))]
    for tenant, days in tenants:
        cutoff = now - timedelta(days=days)
        with sessions.begin() as session:
            old = select(ConversationRow.id).where(ConversationRow.tenant_id == tenant,
                                                   ConversationRow.updated_at < cutoff)
            messages = session.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(old))).rowcount
            conversations = session.execute(delete(ConversationRow).where(
                ConversationRow.tenant_id == tenant, ConversationRow.updated_at < cutoff)).rowcount
            usage = session.execute(delete(UsageRow).where(UsageRow.tenant_id == tenant,
                                                           UsageRow.created_at < cutoff)).rowcount
            events = session.execute(delete(AuditRow).where(AuditRow.tenant_id == tenant,
                                                            AuditRow.at < cutoff)).rowcount
            counts = {"conversations": conversations, "messages": messages, "usage_records": usage,
                      "audit_events": events}
            if any(counts.values()):
                session.add(audit.AuditEvent(audit.DATA_PURGED, actor, tenant,
                                             details={**counts, "retention_days": days}).row())
            report[tenant] = counts
    return report


def export_user(engine: Engine, tenant: str, user: str, actor: str = "cli") -> dict[str, Any]:
    """Everything stored about one end user (the `user` of their requests) of a tenant, as JSON-ready data."""
    sessions = session_factory(engine)
    with sessions.begin() as session:
        conversations = []
        for conversation in session.scalars(select(ConversationRow).where(
                ConversationRow.tenant_id == tenant, ConversationRow.user_id == user)
                .order_by(ConversationRow.created_at)):
            conversations.append({
                "id": conversation.id, "model": conversation.model, "title": conversation.title,
                "created_at": conversation.created_at.isoformat(),
                "messages": [{"role": m.role, "content": m.content, "status": m.status,
                              "created_at": m.created_at.isoformat()} for m in conversation.messages]})
        usage = [{"request_id": u.request_id, "endpoint": u.endpoint, "model": u.model,
                  "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "status": u.status,
                  "created_at": u.created_at.isoformat()}
                 for u in session.scalars(select(UsageRow).where(UsageRow.tenant_id == tenant, UsageRow.user_id == user)
                                          .order_by(UsageRow.created_at))]
        session.add(audit.AuditEvent(audit.DATA_EXPORTED, actor, tenant, details={
            "user_sha256": _digest(user), "conversations": len(conversations), "usage_records": len(usage)}).row())
    return {"tenant": tenant, "user": user, "conversations": conversations, "usage_records": usage}


def delete_user(engine: Engine, tenant: str, user: str, actor: str = "cli") -> dict[str, int]:
    """Deletes one end user's conversations and usage records (the audit event keeps counts only)."""
    sessions = session_factory(engine)
    with sessions.begin() as session:
        theirs = select(ConversationRow.id).where(ConversationRow.tenant_id == tenant, ConversationRow.user_id == user)
        messages = session.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(theirs))).rowcount
        conversations = session.execute(delete(ConversationRow).where(
            ConversationRow.tenant_id == tenant, ConversationRow.user_id == user)).rowcount
        usage = session.execute(delete(UsageRow).where(UsageRow.tenant_id == tenant,
                                                       UsageRow.user_id == user)).rowcount
        counts = {"conversations": conversations, "messages": messages, "usage_records": usage}
        session.add(audit.AuditEvent(audit.DATA_DELETED, actor, tenant,
                                     details={**counts, "user_sha256": _digest(user)}).row())
    return counts


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
