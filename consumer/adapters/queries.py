"""Read side for the HTTP API: one batch with its results, history pages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.operation_events import UNPUBLISHED
from consumer.adapters.tables import (
    batch_operations,
    operation_results,
    outbox,
    waiting_requests,
)
from consumer.adapters.waiting_room import WAITING
from consumer.adapters.webhooks import webhook_column
from consumer.domain.batch import BatchState
from contracts import BatchStatus, Mode, OperationResult, Outcome


def batch_state(row: Mapping[str, Any]) -> BatchState:
    """The domain state of a `batch_operations` row (at least the SUMMARY_COLUMNS)."""
    return BatchState(
        batch_id=row["batch_id"],
        operation_type=row["operation_type"],
        actor_id=row["actor_id"],
        mode=Mode(row["mode"]),
        total=row["total_operations"],
        created_at=row["created_at"],
        status=BatchStatus(row["status"]),
        completed=row["completed_operations"],
        failed=row["failed_operations"],
        skipped=row["skipped_operations"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        cancel_requested=row["cancel_requested_at"] is not None,
        dry_run=row["dry_run"],
        retry_of=row["retry_of"],
    )


def with_figures(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row and the figures derived from it: success_rate, progress and duration_seconds
    (docs/contract.md, Statuses and figures)."""
    state = batch_state(row)
    return {
        **row,
        "success_rate": state.success_rate,
        "progress": state.progress,
        "duration_seconds": state.duration_seconds,
    }


_COUNTERS = (
    (batch_operations.c.completed_operations, Outcome.SUCCEEDED),
    (batch_operations.c.failed_operations, Outcome.FAILED),
    (batch_operations.c.skipped_operations, Outcome.SKIPPED),
)


def _live(counter: Any, outcome: Outcome) -> Any:
    """A counter as it is now: a running batch keeps none (its operations' results are
    counted), a finished one stores them with its terminal status."""
    counted = (
        select(func.count())
        .where(
            operation_results.c.batch_id == batch_operations.c.batch_id,
            operation_results.c.outcome == outcome.value,
        )
        .scalar_subquery()
    )
    running = batch_operations.c.status.in_(
        [BatchStatus.PENDING.value, BatchStatus.PROCESSING.value]
    )
    return case((running, counted), else_=counter).label(counter.name)


SUMMARY_COLUMNS = [
    batch_operations.c.batch_id,
    batch_operations.c.correlation_id,
    batch_operations.c.operation_type,
    batch_operations.c.handler,
    batch_operations.c.actor_id,
    batch_operations.c.mode,
    batch_operations.c.status,
    batch_operations.c.total_operations,
    *(_live(counter, outcome) for counter, outcome in _COUNTERS),
    batch_operations.c.created_at,
    batch_operations.c.started_at,
    batch_operations.c.completed_at,
    batch_operations.c.code,
    batch_operations.c.errors,
    batch_operations.c.cancel_requested_at,
    batch_operations.c.dry_run,
    batch_operations.c.retry_of,
    webhook_column(),
]


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    actor_id: int | None  # None: every actor's batches (back office)
    status: str | None = None
    operation_type: str | None = None


async def batch_summary(conn: AsyncConnection, batch_id: UUID) -> dict[str, Any] | None:
    row = (
        await conn.execute(select(*SUMMARY_COLUMNS).where(batch_operations.c.batch_id == batch_id))
    ).one_or_none()
    return None if row is None else dict(row._mapping)


async def batch_results(
    conn: AsyncConnection, batch_id: UUID, outcome: str | None = None
) -> list[OperationResult]:
    query = (
        select(operation_results.c.event)
        .where(operation_results.c.batch_id == batch_id)
        .order_by(operation_results.c.index)
    )
    if outcome is not None:
        query = query.where(operation_results.c.outcome == outcome)
    return [OperationResult.model_validate_json(body) for body in await conn.scalars(query)]


def _filtered(query: Select[Any], where: HistoryFilter) -> Select[Any]:
    if where.actor_id is not None:
        query = query.where(batch_operations.c.actor_id == where.actor_id)
    if where.status is not None:
        query = query.where(batch_operations.c.status == where.status)
    if where.operation_type is not None:
        query = query.where(batch_operations.c.operation_type == where.operation_type)
    return query


async def history(
    conn: AsyncConnection, where: HistoryFilter, *, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """Total matching batches and one page of them, newest first."""
    count = await conn.scalar(_filtered(select(func.count()).select_from(batch_operations), where))
    page = await conn.execute(
        _filtered(select(*SUMMARY_COLUMNS), where)
        .order_by(batch_operations.c.created_at.desc(), batch_operations.c.batch_id)
        .limit(limit)
        .offset(offset)
    )
    return int(count or 0), [dict(row._mapping) for row in page]


async def backlog(conn: AsyncConnection) -> tuple[int, float]:
    """Unsent events and the age in seconds of the oldest unsent batch event (0 when none).
    Operation events past the relay's position count as unsent (those of its last pass may be
    out already: it moves once they are confirmed)."""
    outbox_row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.extract("epoch", func.now() - func.min(outbox.c.created_at)), 0),
            ).where(outbox.c.sent_at.is_(None))
        )
    ).one()
    operations = await conn.scalar(select(func.count()).where(UNPUBLISHED))
    return int(outbox_row[0]) + int(operations or 0), float(outbox_row[1])


async def requests_waiting(conn: AsyncConnection, namespace: str) -> int:
    """The namespace's requests in the fair-share waiting room, not yet taken or taken by a
    consumer that died (its lease ran out)."""
    count = await conn.scalar(
        select(func.count()).where(waiting_requests.c.namespace == namespace, WAITING)
    )
    return int(count or 0)


async def delete_waiting_requests(conn: AsyncConnection, namespace: str) -> int:
    """Delete the namespace's requests in the waiting room (its teardown); returns how many."""
    deleted = await conn.execute(
        waiting_requests.delete().where(waiting_requests.c.namespace == namespace)
    )
    return int(deleted.rowcount or 0)
