"""The conversation store: conversations and their ordered messages, one transaction per call.

Methods are synchronous SQLAlchemy; the async gRPC service runs them with `asyncio.to_thread`. Every call is scoped to
a tenant: another tenant's conversation reads as not found. Deletion is a hard delete (messages go with it through
the foreign key's ON DELETE CASCADE): a user who deletes a conversation expects their text to be gone.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from services.common.db import session_factory
from services.common.errors import ApiError, invalid
from services.orchestrator.conversations.models import ConversationRow, MessageRow

STATUSES = ("complete", "incomplete", "refused")
ROLES = ("system", "user", "assistant", "tool")
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    position: int
    role: str
    content: str
    status: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    tenant_id: str
    user_id: str | None
    model: str
    title: str
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime
    messages: list[StoredMessage] = field(default_factory=list)


def conversation_not_found(conversation_id: str) -> ApiError:
    return ApiError(404, f"No conversation found with id '{conversation_id}'.", "invalid_request_error",
                    "conversation_id", "conversation_not_found")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every value we write is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _message(row: MessageRow) -> StoredMessage:
    return StoredMessage(id=row.id, position=row.position, role=row.role, content=row.content, status=row.status,
                         prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                         finish_reason=row.finish_reason, created_at=_utc(row.created_at))


def _conversation(row: ConversationRow, with_messages: bool) -> Conversation:
    return Conversation(id=row.id, tenant_id=row.tenant_id, user_id=row.user_id, model=row.model, title=row.title,
                        system_prompt=row.system_prompt, created_at=_utc(row.created_at),
                        updated_at=_utc(row.updated_at),
                        messages=[_message(m) for m in row.messages] if with_messages else [])


def _encode_cursor(row: ConversationRow) -> str:
    raw = json.dumps({"u": _utc(row.updated_at).isoformat(), "id": row.id}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(data["u"]), str(data["id"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid("Invalid 'page_token'.", "page_token", "invalid_value") from None


class ConversationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    def _owned(self, session: Session, tenant_id: str, conversation_id: str, *, lock: bool = False,
               with_messages: bool = False) -> ConversationRow:
        query = select(ConversationRow).where(ConversationRow.id == conversation_id,
                                              ConversationRow.tenant_id == tenant_id)
        if with_messages:
            query = query.options(selectinload(ConversationRow.messages))
        if lock:
            query = query.with_for_update()  # serialises appends to one conversation (a no-op on SQLite)
        row = session.scalars(query).one_or_none()
        if row is None:
            raise conversation_not_found(conversation_id)
        return row

    def create(self, tenant_id: str, model: str, *, user_id: str | None = None, title: str = "",
               system_prompt: str | None = None) -> Conversation:
        now = _now()
        row = ConversationRow(id=str(uuid.uuid4()), tenant_id=tenant_id, user_id=user_id, model=model, title=title,
                              system_prompt=system_prompt, created_at=now, updated_at=now)
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
            return _conversation(row, with_messages=False)

    def get(self, tenant_id: str, conversation_id: str) -> Conversation:
        with self._sessions() as session:
            return _conversation(self._owned(session, tenant_id, conversation_id, with_messages=True), True)

    def list(self, tenant_id: str, *, user_id: str | None = None, page_size: int = 20,
             page_token: str | None = None) -> tuple[list[Conversation], str | None]:
        """Newest (most recently updated) first; `page_token` is an opaque keyset cursor, stable under inserts."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise invalid(f"'page_size' must be between 1 and {MAX_PAGE_SIZE}.", "page_size", "invalid_value")
        query = select(ConversationRow).where(ConversationRow.tenant_id == tenant_id)
        if user_id is not None:
            query = query.where(ConversationRow.user_id == user_id)
        if page_token:
            updated, last_id = _decode_cursor(page_token)
            query = query.where(or_(ConversationRow.updated_at < updated,
                                    and_(ConversationRow.updated_at == updated, ConversationRow.id < last_id)))
        query = query.order_by(ConversationRow.updated_at.desc(), ConversationRow.id.desc()).limit(page_size + 1)
        with self._sessions() as session:
            rows = list(session.scalars(query))
        more = len(rows) > page_size
        rows = rows[:page_size]
        return [_conversation(r, False) for r in rows], (_encode_cursor(rows[-1]) if more else None)

    def append_message(self, tenant_id: str, conversation_id: str, role: str, content: str, *,
                       status: str = "complete", prompt_tokens: int | None = None,
                       completion_tokens: int | None = None, finish_reason: str | None = None) -> StoredMessage:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        try:
            with self._sessions.begin() as session:
                conversation = self._owned(session, tenant_id, conversation_id, lock=True)
                now = _now()
                # Touch the conversation first: the autoflushed UPDATE takes SQLite's write lock before the position
                # is read, so concurrent appends queue up there (PostgreSQL already holds the row lock).
                conversation.updated_at = now
                last = session.scalar(select(func.max(MessageRow.position))
                                      .where(MessageRow.conversation_id == conversation_id))
                row = MessageRow(id=str(uuid.uuid4()), conversation_id=conversation_id,
                                 position=0 if last is None else last + 1, role=role, content=content, status=status,
                                 prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                 finish_reason=finish_reason, created_at=now)
                session.add(row)
                session.flush()
                return _message(row)
        except IntegrityError as exc:
            # Only reachable when two writers raced for the same position (SQLite has no row locks to prevent it).
            raise ApiError(409, "The conversation was modified concurrently; retry the request.",
                           "invalid_request_error", "conversation_id", "conversation_busy") from exc

    def delete(self, tenant_id: str, conversation_id: str) -> None:
        with self._sessions.begin() as session:
            result = session.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id,
                                                                   ConversationRow.tenant_id == tenant_id))
            if result.rowcount == 0:
                raise conversation_not_found(conversation_id)
