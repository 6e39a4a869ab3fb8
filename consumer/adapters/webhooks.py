"""Webhook rows and secrets in PostgreSQL: a callback stored with its batch, deliveries due
taken under a lease, their outcome recorded, and the users' signing secrets.

A delivery is due once its batch is terminal (it has its completion event): the batch's
completion commit is what makes it due, so a consumer killed after that commit leaves it due
for any other. A try takes the row under a lease (`next_attempt_at` moved past the try's
longest duration): another worker, or this one after a restart, takes it again only once the
lease is over, which is how a try cut short by a crash is tried again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.tables import batch_operations, users, webhook_secrets, webhooks
from consumer.adapters.tokens import UnknownUser


async def add_callback(conn: AsyncConnection, batch_id: UUID, url: str) -> None:
    """Store the batch's callback (in the transaction that stores the batch)."""
    await conn.execute(insert(webhooks).values(batch_id=batch_id, url=url).on_conflict_do_nothing())


async def webhook_secret(conn: AsyncConnection, user_id: int, *, rotate: bool = False) -> str:
    """The user's webhook secret, created the first time (replaced with `rotate`). Raises
    UnknownUser for a user that does not exist or was deleted."""
    exists = await conn.scalar(
        select(users.c.id).where(users.c.id == user_id, users.c.deleted_at.is_(None))
    )
    if exists is None:
        raise UnknownUser(f"user {user_id} does not exist")
    return await _secret(conn, user_id, rotate=rotate)


async def _secret(conn: AsyncConnection, user_id: int, *, rotate: bool = False) -> str:
    fresh = secrets.token_urlsafe(32)
    row = insert(webhook_secrets).values(user_id=user_id, secret=fresh)
    if rotate:
        row = row.on_conflict_do_update(
            index_elements=[webhook_secrets.c.user_id],
            set_={"secret": row.excluded.secret, "created_at": func.now()},
        )
    else:
        row = row.on_conflict_do_nothing()
    await conn.execute(row)
    stored = await conn.execute(
        select(webhook_secrets.c.secret).where(webhook_secrets.c.user_id == user_id)
    )
    secret: str = stored.scalar_one()
    return secret


@dataclass(frozen=True, slots=True)
class DueDelivery:
    batch_id: UUID
    url: str
    attempts: int  # this try included
    body: bytes  # the completion event, byte for byte
    secret: str
    # Past it, a failed try is the last (the batch's completion plus the retry budget).
    deadline: datetime


_OWED = (webhooks.c.delivered_at.is_(None)) & (webhooks.c.given_up_at.is_(None))


async def take_due(
    conn: AsyncConnection, limit: int, *, lease: timedelta, retry_budget: timedelta
) -> list[DueDelivery]:
    """Up to `limit` deliveries due now, each counted as one more try and leased for `lease`
    (commit before trying them: the lease and the count must survive a crash)."""
    due = (
        select(webhooks.c.batch_id)
        .join(batch_operations, batch_operations.c.batch_id == webhooks.c.batch_id)
        .where(
            _OWED,
            batch_operations.c.completion_event.is_not(None),
            or_(webhooks.c.next_attempt_at.is_(None), webhooks.c.next_attempt_at <= func.now()),
        )
        .order_by(webhooks.c.next_attempt_at.asc().nulls_first())
        .limit(limit)
        .with_for_update(of=webhooks, skip_locked=True)
        .cte("due")
    )
    taken = (
        update(webhooks)
        .where(webhooks.c.batch_id == due.c.batch_id)
        .where(webhooks.c.batch_id == batch_operations.c.batch_id)
        .values(attempts=webhooks.c.attempts + 1, next_attempt_at=func.now() + lease)
        .returning(
            webhooks.c.batch_id,
            webhooks.c.url,
            webhooks.c.attempts,
            batch_operations.c.completion_event,
            batch_operations.c.actor_id,
            batch_operations.c.completed_at,
        )
    )
    rows = (await conn.execute(taken)).all()
    return [
        DueDelivery(
            batch_id=row.batch_id,
            url=row.url,
            attempts=row.attempts,
            body=row.completion_event,
            # Created on first need: the CLI shows the same one whenever it is asked.
            secret=await _secret(conn, row.actor_id),
            deadline=row.completed_at + retry_budget,
        )
        for row in rows
    ]


async def record_delivered(conn: AsyncConnection, batch_id: UUID, status: int) -> None:
    await conn.execute(
        update(webhooks)
        .where(webhooks.c.batch_id == batch_id)
        .values(last_status=status, last_error=None, delivered_at=func.now(), next_attempt_at=None)
    )


async def record_failed(
    conn: AsyncConnection,
    batch_id: UUID,
    status: int | None,
    error: str | None,
    next_at: datetime | None,
) -> None:
    """A failed try: tried again at `next_at`, or given up when it is None."""
    values: dict[str, Any] = {"last_status": status, "last_error": error}
    if next_at is None:
        values |= {"given_up_at": func.now(), "next_attempt_at": None}
    else:
        values["next_attempt_at"] = next_at
    await conn.execute(update(webhooks).where(webhooks.c.batch_id == batch_id).values(values))


def webhook_column() -> ColumnElement[Any]:
    """The batch's `webhook` as the API shows it (NULL without a callback), a column of any
    select from batch_operations."""
    shown = func.jsonb_build_object(
        "url",
        webhooks.c.url,
        "attempts",
        webhooks.c.attempts,
        "last_status",
        webhooks.c.last_status,
        "delivered_at",
        webhooks.c.delivered_at,
        "given_up_at",
        webhooks.c.given_up_at,
        type_=JSONB,
    )
    return (
        select(shown)
        .where(webhooks.c.batch_id == batch_operations.c.batch_id)
        .scalar_subquery()
        .label("webhook")
    )
