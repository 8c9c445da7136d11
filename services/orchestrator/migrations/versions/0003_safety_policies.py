"""Safety policies per tenant: thresholds, actions, allow/deny lists and fail mode, read by the safety service.

The row `default` (if any) replaces the built-in default policy for tenants without a row of their own. No foreign
key to `tenants`: a policy may be set before its tenant exists, and `default` is not a tenant.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_policies",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("policy", sa.Text(), nullable=False),  # JSON: services/safety/policy.py policy_to_dict
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("safety_policies")
