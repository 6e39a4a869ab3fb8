"""PostgreSQL tables: the marketplace, batch records, operation results and the event outbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _timestamps() -> list[Column[object]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # Soft delete: the row stays; every rule treats it as missing.
        Column("deleted_at", DateTime(timezone=True)),
    ]


users = Table(
    "users",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
    Column("phone", String(40)),
    Column("role", String(20), nullable=False),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    *_timestamps(),
    CheckConstraint("role IN ('admin', 'staff', 'client', 'professional')", name="role"),
)

professionals = Table(
    "professionals",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, unique=True),
    Column("approved", Boolean, nullable=False, server_default=text("false")),
    Column("verified", Boolean, nullable=False, server_default=text("false")),
    Column("approved_by", ForeignKey("users.id")),
    Column("approved_at", DateTime(timezone=True)),
    Column("approval_reason", Text),
    *_timestamps(),
)

services = Table(
    "services",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("professional_id", ForeignKey("professionals.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("price", Numeric(12, 2), nullable=False),
    Column("category", String(100), nullable=False, server_default="general"),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    *_timestamps(),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("client_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("professional_id", ForeignKey("professionals.id"), nullable=False, index=True),
    Column("service_id", ForeignKey("services.id"), nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("notes", Text, nullable=False, server_default=""),
    Column("price", Numeric(12, 2), nullable=False),
    *_timestamps(),
    CheckConstraint(
        "status IN ('pending', 'accepted', 'in_progress', 'completed', 'cancelled')",
        name="status",
    ),
)

batch_operations = Table(
    "batch_operations",
    metadata,
    Column("batch_id", Uuid, primary_key=True),
    Column("operation_type", String(40), nullable=False),
    Column("handler", String(100)),
    Column("actor_id", Integer, nullable=False),
    Column("mode", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("total_operations", SmallInteger, nullable=False),
    Column("completed_operations", SmallInteger, nullable=False, server_default="0"),
    Column("failed_operations", SmallInteger, nullable=False, server_default="0"),
    Column("skipped_operations", SmallInteger, nullable=False, server_default="0"),
    # sha256 of the canonical request body: the same batch_id with another body is a CONFLICT.
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("correlation_id", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    # The exact completion event, so that every re-publication is byte-identical.
    Column("completion_event", LargeBinary),
    # Atomic batches only: the operation running when last seen, committed on its own so that
    # a batch that keeps crashing the consumer blames the right operation.
    Column("in_hand", SmallInteger),
    # A rejected batch's error code and reasons (the `errors` of its rejection event).
    Column("code", String(30)),
    Column("errors", JSONB),
    # The request as accepted: what a retry runs again, and what a cancel skips.
    Column("request", JSONB),
    # Set once a cancel is asked for (by that actor; NULL: an operator's `batchops cancel`);
    # every operation that commits after it is refused, so nothing runs after the cancel.
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("cancel_requested_by", Integer),
    Column("dry_run", Boolean, nullable=False, server_default=text("false")),
    Column("retry_of", Uuid),
    # History look-ups: newest first, per actor or for everyone, optionally by status.
    Index("ix_batch_operations_actor_created", "actor_id", text("created_at DESC")),
    Index("ix_batch_operations_created", text("created_at DESC")),
    Index(
        "ix_batch_operations_actor_status_created", "actor_id", "status", text("created_at DESC")
    ),
    Index("ix_batch_operations_status_created", "status", text("created_at DESC")),
)

operation_results = Table(
    "operation_results",
    metadata,
    Column(
        "batch_id",
        ForeignKey("batch_operations.batch_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Primary key (batch_id, index): an operation's effect commits at most once.
    Column("index", SmallInteger, primary_key=True),
    Column("resource_id", BigInteger, nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("status_code", SmallInteger, nullable=False),
    Column("error_code", String(30)),
    # The operation event exactly as published.
    Column("event", LargeBinary, nullable=False),
    # The relay publishes the events of these rows themselves (no outbox row per operation),
    # telling new rows by `txid`, the inserting transaction's id (see
    # adapters/operation_events.py); `announce` is false for a dry run's.
    Column(
        "txid",
        BigInteger,
        nullable=False,
        server_default=text("(pg_current_xact_id())::text::bigint"),
    ),
    Column("announce", Boolean, nullable=False, server_default=text("true")),
    Column("traceparent", String(64)),
    # BRIN: almost free to keep up as rows are appended in txid order, and enough to find the
    # newest ones; a B-tree would cost each operation one more index insertion.
    Index("ix_operation_results_txid", "txid", postgresql_using="brin"),
)

# How far the relay has published operation events: every announced result row of a txid
# below `horizon` has been published, but those of the `pending` transactions (running when
# the relay last looked). See adapters/operation_events.py.
relay_positions = Table(
    "relay_positions",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("horizon", BigInteger, nullable=False),
    Column("pending", ARRAY(BigInteger), nullable=False, server_default=text("'{}'")),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("exchange", String(255), nullable=False),
    Column("routing_key", String(255), nullable=False),
    Column("message_id", Uuid, nullable=False, index=True),
    Column("correlation_id", String(255)),
    # Replies to a caller's private queue may find it gone: those are not `mandatory`.
    Column("mandatory", Boolean, nullable=False, server_default=text("true")),
    Column("body", LargeBinary, nullable=False),
    # W3C trace context to carry on the published message (optional tracing).
    Column("traceparent", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    # Only a digest is stored: a database leak does not leak usable tokens.
    Column("token_sha256", LargeBinary(32), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

# A batch submitted over HTTP with a `callback_url`: its completion is POSTed there once the
# batch is terminal (entrypoints/webhooks.py). The row is written with the batch's `pending`
# row and the terminal status comes with the completion's commit, so the pair is the
# delivery's outbox entry: nothing more is written when the batch finishes.
webhooks = Table(
    "webhooks",
    metadata,
    Column(
        "batch_id",
        ForeignKey("batch_operations.batch_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("url", Text, nullable=False),
    # Every try, the successful one included (counted when the try starts).
    Column("attempts", Integer, nullable=False, server_default="0"),
    # The receiver's HTTP status on the last try; NULL when it never answered.
    Column("last_status", SmallInteger),
    Column("last_error", Text),
    # NULL: as soon as the batch is terminal. While a try runs, the end of its lease.
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("given_up_at", DateTime(timezone=True)),
    Index(
        "ix_webhooks_due",
        "next_attempt_at",
        postgresql_where=text("delivered_at IS NULL AND given_up_at IS NULL"),
    ),
)

# The key of each user's webhook signatures (`batchops webhook-secret USER_ID`).
webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("secret", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Requests taken off the work queue to wait for a slot under fair share (docs/operations.md,
# "Fair share"): a request waits here, acknowledged, instead of held unacknowledged by a
# consumer, so that a crash hands back nothing that did not run and spends no delivery attempt
# on it. A consumer leases a row to run it and deletes it once the batch is terminal.
waiting_requests = Table(
    "waiting_requests",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    # Several environments may share one database (BATCHOPS_NAMESPACE).
    Column("namespace", Text, nullable=False),
    Column("batch_id", Uuid, nullable=False),
    # The same request taken off the queue twice (a crash before its ack) waits once.
    Column("body_sha256", LargeBinary(32), nullable=False),
    Column("actor_id", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    # Kept for the copy put in `{ns}.dead` should it be dead-lettered.
    Column("routing_key", Text, nullable=False),
    # The delivery's properties, as the executor reads them (intake.Delivery).
    Column("user_id", Text),
    Column("message_id", Text),
    Column("correlation_id", Text),
    Column("reply_to", Text),
    Column("content_type", Text),
    Column("published_at", DateTime(timezone=True)),
    Column("traceparent", Text),
    Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The consumer running it and until when its lease holds (it renews it while it runs).
    Column("leased_by", Text),
    Column("lease_until", DateTime(timezone=True)),
    # Runs started (a consumer's crash ends one): past the delivery limit it is given up on.
    Column("attempts", Integer, nullable=False, server_default="0"),
    Index("uq_waiting_requests_request", "namespace", "batch_id", "body_sha256", unique=True),
    # Leasing walks each waiting actor's oldest free request; clearing run-out leases, the
    # leased ones by their end.
    Index(
        "ix_waiting_requests_free",
        "namespace",
        "actor_id",
        "id",
        postgresql_where=text("leased_by IS NULL"),
    ),
    Index(
        "ix_waiting_requests_leased",
        "namespace",
        "lease_until",
        postgresql_where=text("leased_by IS NOT NULL"),
    ),
)
