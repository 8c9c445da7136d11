"""Tenancy: tenants, users, API keys (salted hashes only), usage records and the audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),  # None: keep forever
        sa.Column("store_prompt_text", sa.Boolean(), nullable=False, server_default=sa.false()),  # audit opt-in
        sa.Column("default_collections", sa.Text(), nullable=True),  # JSON list, used by the retrieve stage
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("retention_days IS NULL OR retention_days > 0", name="ck_tenants_retention"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(128), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_users_tenant_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(128), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("prefix", sa.String(32), nullable=False),  # shown in listings; also the lookup index
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),  # per-key overrides of the tier's limits (None: the tier's)
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("tokens_per_day", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("deployment", sa.String(128), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cached_prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),  # UTC yyyy-mm-dd, for per-day reports and quotas
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'error', 'cancelled', 'rejected')", name="ck_usage_status"),
        sa.CheckConstraint("prompt_tokens >= 0 AND completion_tokens >= 0 AND cached_prompt_tokens >= 0",
                           name="ck_usage_tokens"),
    )
    op.create_index("ix_usage_tenant_day", "usage_records", ["tenant_id", "day"])
    op.create_index("ix_usage_created", "usage_records", ["created_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("prompt_sha256", sa.String(64), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=True),  # only for tenants that opted in
        sa.Column("details", sa.Text(), nullable=False, server_default="{}"),  # JSON
    )
    op.create_index("ix_audit_tenant_at", "audit_events", ["tenant_id", "at"])
    op.create_index("ix_audit_at", "audit_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_at", table_name="audit_events")
    op.drop_index("ix_audit_tenant_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_usage_created", table_name="usage_records")
    op.drop_index("ix_usage_tenant_day", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_index("ix_api_keys_prefix", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_table("tenants")
