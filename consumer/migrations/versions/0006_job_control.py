"""job control: the request kept for retries, cancellation, dry runs, retry_of

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 12:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batch_operations",
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column(
        "batch_operations",
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("batch_operations", sa.Column("cancel_requested_by", sa.Integer(), nullable=True))
    op.add_column(
        "batch_operations",
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("batch_operations", sa.Column("retry_of", sa.Uuid(), nullable=True))


def downgrade() -> None:
    for column in ("retry_of", "dry_run", "cancel_requested_by", "cancel_requested_at", "request"):
        op.drop_column("batch_operations", column)
