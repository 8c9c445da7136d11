"""Alembic environment: runs on the connection `migrate()` hands over (online mode only; no offline SQL scripts)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

# Any fixed 64-bit key: concurrent orchestrator starts against one PostgreSQL take turns instead of racing.
_PG_MIGRATION_LOCK = 0x511CE


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported; run `migrate(url)`")
run_migrations_online()
