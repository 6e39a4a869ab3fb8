"""Queries for operators: retention clean-up and per-user statistics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.batches import UNKNOWN_REQUEST
from consumer.adapters.tables import batch_operations, outbox, webhooks
from consumer.domain.stats import StatsRow, UserStats, summarize
from contracts import BatchStatus

_TERMINAL = [s.value for s in BatchStatus if s.is_terminal]


@dataclass(frozen=True, slots=True)
class CleanupCounts:
    batches: int
    outbox_rows: int


async def cleanup(conn: AsyncConnection, cutoff: datetime, *, dry_run: bool) -> CleanupCounts:
    """Delete terminal batches (and their results) finished before `cutoff`, but for those
    whose webhook is still being tried, cancels in advance made before it whose request never
    arrived, and sent events.

    Once a batch is deleted its batch_id is forgotten: a later re-submission runs again.
    """
    # The webhook row goes with its batch: deleted mid-retry, the completion is never POSTed.
    webhook_due = exists().where(
        webhooks.c.batch_id == batch_operations.c.batch_id,
        webhooks.c.delivered_at.is_(None),
        webhooks.c.given_up_at.is_(None),
    )
    finished = (
        batch_operations.c.status.in_(_TERMINAL)
        & (batch_operations.c.completed_at < cutoff)
        & ~webhook_due
    )
    never_arrived = (
        (batch_operations.c.fingerprint == UNKNOWN_REQUEST)
        & (batch_operations.c.status == BatchStatus.PENDING.value)
        & (batch_operations.c.cancel_requested_at < cutoff)
    )
    old_batches = finished | never_arrived
    sent_events = outbox.c.sent_at.is_not(None) & (outbox.c.sent_at < cutoff)
    if dry_run:
        batches = await conn.scalar(select(func.count()).where(old_batches)) or 0
        events = await conn.scalar(select(func.count()).where(sent_events)) or 0
        return CleanupCounts(batches, events)
    batches = (await conn.execute(delete(batch_operations).where(old_batches))).rowcount
    events = (await conn.execute(delete(outbox).where(sent_events))).rowcount
    return CleanupCounts(batches, events)


async def user_stats(conn: AsyncConnection, actor_id: int) -> UserStats:
    rows = await conn.execute(
        select(
            batch_operations.c.status,
            batch_operations.c.operation_type,
            func.count(),
            func.coalesce(func.sum(batch_operations.c.total_operations), 0),
            func.coalesce(func.sum(batch_operations.c.completed_operations), 0),
        )
        # A dry run changed nothing: it is history, not a figure.
        .where(batch_operations.c.actor_id == actor_id, batch_operations.c.dry_run.is_(False))
        .group_by(batch_operations.c.status, batch_operations.c.operation_type)
    )
    return summarize(StatsRow(*row) for row in rows)
