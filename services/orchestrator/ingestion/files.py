"""Uploaded files per tenant (table `uploaded_files`, migration 0004): what POST /v1/files stores until the file is
added to a vector store. The text is extracted at upload, so a file that cannot be read is refused at once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from services.orchestrator.conversations.models import Base


class UploadedFileRow(Base):
    __tablename__ = "uploaded_files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class UploadedFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    text: str

    def as_openai(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None}


def _file(row: UploadedFileRow) -> UploadedFile:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return UploadedFile(row.id, row.filename, row.purpose, row.bytes, int(created.timestamp()), row.text)


class FileStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, tenant: str, filename: str, purpose: str, size: int, text: str) -> UploadedFile:
        row = UploadedFileRow(id=f"file-{secrets.token_hex(12)}", tenant_id=tenant, filename=filename,
                              purpose=purpose, bytes=size, text=text, created_at=datetime.now(UTC))
        with Session(self.engine) as session, session.begin():
            session.add(row)
            session.flush()
            return _file(row)

    def get(self, tenant: str, file_id: str) -> UploadedFile | None:
        with Session(self.engine) as session:
            row = session.get(UploadedFileRow, file_id)
            return _file(row) if row is not None and row.tenant_id == tenant else None

    def list(self, tenant: str) -> list[UploadedFile]:
        with Session(self.engine) as session:
            rows = session.scalars(select(UploadedFileRow).where(UploadedFileRow.tenant_id == tenant)
                                   .order_by(UploadedFileRow.created_at.desc())).all()
            return [_file(row) for row in rows]

    def delete(self, tenant: str, file_id: str) -> bool:
        with Session(self.engine) as session, session.begin():
            row = session.get(UploadedFileRow, file_id)
            if row is None or row.tenant_id != tenant:
                return False
            session.delete(row)
            return True
