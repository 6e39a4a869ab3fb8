"""waiting_requests: requests waiting in the database for a slot under fair share

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 00:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "waiting_requests",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("body_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("routing_key", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.Text(), nullable=True),
        sa.Column("reply_to", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("traceparent", sa.Text(), nullable=True),
        sa.Column(
            "parked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("leased_by", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waiting_requests")),
    )
    op.create_index(
        "uq_waiting_requests_request",
        "waiting_requests",
        ["namespace", "batch_id", "body_sha256"],
        unique=True,
    )
    op.create_index(
        "ix_waiting_requests_free",
        "waiting_requests",
        ["namespace", "actor_id", "id"],
        postgresql_where=sa.text("leased_by IS NULL"),
    )
    op.create_index(
        "ix_waiting_requests_leased",
        "waiting_requests",
        ["namespace", "lease_until"],
        postgresql_where=sa.text("leased_by IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("waiting_requests")
