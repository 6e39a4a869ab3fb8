"""Read side of the web console and `batchops status`: filtered batch pages, a batch's events
and their publication, the last hour's figures, and the rejections behind dead letters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.operation_events import UNPUBLISHED
from consumer.adapters.queries import SUMMARY_COLUMNS, backlog, requests_waiting
from consumer.adapters.tables import batch_operations, operation_results, outbox
from contracts import (
    BatchStatus,
    OperationResult,
    completion_event_id,
    operation_event_id,
    operation_routing_key,
)

FAILED_STATUSES = (BatchStatus.FAILED.value, BatchStatus.PARTIAL.value)


@dataclass(frozen=True, slots=True)
class BatchQuery:
    """The console's batch filters; None means any."""

    actor_id: int | None = None
    status: str | None = None
    operation_type: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    batch_id: UUID | None = None


def _filtered(query: Select[Any], where: BatchQuery) -> Select[Any]:
    columns = batch_operations.c
    if where.actor_id is not None:
        query = query.where(columns.actor_id == where.actor_id)
    if where.status is not None:
        query = query.where(columns.status == where.status)
    if where.operation_type is not None:
        query = query.where(columns.operation_type == where.operation_type)
    if where.created_from is not None:
        query = query.where(columns.created_at >= where.created_from)
    if where.created_before is not None:
        query = query.where(columns.created_at < where.created_before)
    if where.batch_id is not None:
        query = query.where(columns.batch_id == where.batch_id)
    return query


async def batch_page(
    conn: AsyncConnection, where: BatchQuery, *, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many batches match, and one page of them, newest first."""
    count = await conn.scalar(_filtered(select(func.count()).select_from(batch_operations), where))
    rows = await conn.execute(
        _filtered(select(*SUMMARY_COLUMNS), where)
        .order_by(batch_operations.c.created_at.desc(), batch_operations.c.batch_id)
        .limit(limit)
        .offset(offset)
    )
    return int(count or 0), [dict(row._mapping) for row in rows]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of a batch not yet deleted or published: when it was committed and, for an
    outbox row, published (None: not yet)."""

    event_id: UUID
    routing_key: str
    created_at: datetime
    sent_at: datetime | None


async def batch_events(
    conn: AsyncConnection, batch_id: UUID, operations: int
) -> dict[UUID, list[EventRecord]]:
    """A batch's events by event id that the outbox still holds (a completion also sent to
    reply_to has two; rows `batchops cleanup` removed are simply missing), and its operation
    events the relay has not published yet; an operation event not here was published."""
    ids = [operation_event_id(batch_id, index) for index in range(operations)]
    ids.append(completion_event_id(batch_id))
    rows = await conn.execute(
        select(outbox.c.message_id, outbox.c.routing_key, outbox.c.created_at, outbox.c.sent_at)
        .where(outbox.c.message_id.in_(ids))
        .order_by(outbox.c.id)
    )
    found: dict[UUID, list[EventRecord]] = {}
    for row in rows:
        found.setdefault(row.message_id, []).append(EventRecord(*row))
    waiting = await conn.scalars(
        select(operation_results.c.event)
        .where(operation_results.c.batch_id == batch_id, UNPUBLISHED)
        .order_by(operation_results.c.index)
    )
    for body in waiting:
        event = OperationResult.model_validate_json(body)
        key = operation_routing_key(event.operation_type, event.outcome.value)
        found.setdefault(event.event_id, []).append(
            EventRecord(event.event_id, key, event.occurred_at, None)
        )
    return found


async def batch_request(conn: AsyncConnection, batch_id: UUID) -> dict[str, Any] | None:
    """The request as the batch was accepted (None for a batch stored without it)."""
    request = await conn.scalar(
        select(batch_operations.c.request).where(batch_operations.c.batch_id == batch_id)
    )
    return request if isinstance(request, dict) else None


async def rejection_bodies(conn: AsyncConnection, event_ids: Iterable[UUID]) -> dict[UUID, bytes]:
    """The stored rejection events among `event_ids` (the reasons behind dead letters)."""
    wanted = list(event_ids)
    if not wanted:
        return {}
    rows = await conn.execute(
        select(outbox.c.message_id, outbox.c.body).where(outbox.c.message_id.in_(wanted))
    )
    return {row.message_id: bytes(row.body) for row in rows}


@dataclass(frozen=True, slots=True)
class Minute:
    """Batches that finished in one minute, and how many of them failed (failed or partial)."""

    at: datetime
    finished: int
    failed: int


@dataclass(frozen=True, slots=True)
class Overview:
    in_flight: int  # processing now
    waiting: int  # stored pending (HTTP submissions not yet taken)
    unsent_events: int
    oldest_unsent_seconds: float
    # Requests waiting for a slot under fair share (in the waiting room of the namespace asked).
    parked: int = 0
    last_hour: list[Minute] = field(default_factory=list)
    last_batch: dict[str, Any] | None = None

    @property
    def finished_last_hour(self) -> int:
        return sum(minute.finished for minute in self.last_hour)

    @property
    def failure_rate(self) -> float:
        """Failed or partial batches of those finished in the last hour, in percent."""
        failed = sum(minute.failed for minute in self.last_hour)
        finished = self.finished_last_hour
        return round(100 * failed / finished, 2) if finished else 0.0


async def overview(
    conn: AsyncConnection, actor_id: int | None = None, namespace: str | None = None
) -> Overview:
    """The figures an operator watches; `actor_id` narrows them to one owner's batches, and
    `namespace` adds the requests waiting under fair share there."""
    scope = BatchQuery(actor_id=actor_id)
    by_status = dict(
        (
            await conn.execute(
                _filtered(
                    select(batch_operations.c.status, func.count()).where(
                        batch_operations.c.status.in_(
                            [BatchStatus.PROCESSING.value, BatchStatus.PENDING.value]
                        )
                    ),
                    scope,
                ).group_by(batch_operations.c.status)
            )
        ).all()
    )
    unsent, oldest = await backlog(conn)
    _, last = await batch_page(conn, scope, limit=1, offset=0)
    return Overview(
        in_flight=int(by_status.get(BatchStatus.PROCESSING.value, 0)),
        waiting=int(by_status.get(BatchStatus.PENDING.value, 0)),
        unsent_events=unsent,
        oldest_unsent_seconds=oldest,
        parked=await requests_waiting(conn, namespace) if namespace is not None else 0,
        last_hour=await _last_hour(conn, scope),
        last_batch=last[0] if last else None,
    )


async def _last_hour(conn: AsyncConnection, scope: BatchQuery) -> list[Minute]:
    """Per minute of the last hour (oldest first, 60 of them, empty minutes included)."""
    minute = func.date_trunc("minute", batch_operations.c.completed_at).label("minute")
    failed = func.count().filter(batch_operations.c.status.in_(FAILED_STATUSES))
    rows = await conn.execute(
        _filtered(
            select(minute, func.count(), failed).where(
                batch_operations.c.completed_at >= func.now() - func.make_interval(0, 0, 0, 0, 1),
                batch_operations.c.status != BatchStatus.REJECTED.value,
            ),
            scope,
        ).group_by(minute)
    )
    counted = {row[0]: (int(row[1]), int(row[2])) for row in rows}
    now = await conn.scalar(select(func.date_trunc("minute", func.now())))
    assert isinstance(now, datetime)  # noqa: S101 - PostgreSQL's now() is a timestamp
    minutes = [now - timedelta(minutes=59 - i) for i in range(60)]
    return [Minute(at, *counted.get(at, (0, 0))) for at in minutes]
