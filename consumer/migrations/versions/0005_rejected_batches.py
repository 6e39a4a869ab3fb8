"""rejected batches keep their code and errors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_operations", sa.Column("code", sa.String(length=30), nullable=True))
    op.add_column(
        "batch_operations",
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("batch_operations", "errors")
    op.drop_column("batch_operations", "code")
