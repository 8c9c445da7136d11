"""The request's OpenAI `metadata` (up to 16 string pairs) kept with its usage record, as JSON.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("metadata", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "metadata")
