"""operation events relayed from operation_results by transaction id; no outbox row each

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows get txid 0: their events went through the outbox already. Then new rows
    # carry their transaction's id (a volatile default would have rewritten the table).
    op.add_column(
        "operation_results",
        sa.Column("txid", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.alter_column(
        "operation_results",
        "txid",
        server_default=sa.text("(pg_current_xact_id())::text::bigint"),
    )
    op.add_column(
        "operation_results",
        sa.Column("announce", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.add_column(
        "operation_results", sa.Column("traceparent", sa.String(length=64), nullable=True)
    )
    op.create_index(
        "ix_operation_results_txid", "operation_results", ["txid"], postgresql_using="brin"
    )
    op.create_table(
        "relay_positions",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.Column(
            "pending",
            postgresql.ARRAY(sa.BigInteger()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_relay_positions")),
    )
    # From the oldest transaction still running now: rows of any open one are above it.
    op.execute(
        "INSERT INTO relay_positions (name, horizon) VALUES "
        "('operation_events', pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"
    )


def downgrade() -> None:
    op.drop_table("relay_positions")
    op.drop_index("ix_operation_results_txid", table_name="operation_results")
    for column in ("traceparent", "announce", "txid"):
        op.drop_column("operation_results", column)
