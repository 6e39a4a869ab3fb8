"""Batches submitted over HTTP are stored `pending` before they are published, so that their
`Location` answers at once; the consumer that takes the request turns the row into its run."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.batches import UNKNOWN_REQUEST
from consumer.adapters.tables import batch_operations
from contracts import BatchRequest, BatchStatus


class Stored(enum.Enum):
    NEW = "new"
    # The same batch_id with the same body: publishing it again is a harmless re-submission.
    SAME = "same"
    CONFLICT = "conflict"


# What a batch cancelled before anybody saw it takes from the request when it comes.
_FILLED_IN = (
    "operation_type",
    "handler",
    "actor_id",
    "mode",
    "total_operations",
    "fingerprint",
    "correlation_id",
    "request",
    "dry_run",
    "retry_of",
)


async def store_pending(
    conn: AsyncConnection,
    request: BatchRequest,
    *,
    fingerprint: bytes,
    correlation_id: str,
    now: datetime,
) -> Stored:
    """Insert the batch as `pending` unless its id is taken; say how the id was found. A batch
    cancelled before anybody saw it is filled in with this request (and stays cancelled)."""
    row = insert(batch_operations).values(
        batch_id=request.batch_id,
        operation_type=request.operation_type.value,
        handler=request.handler,
        actor_id=request.actor_id,
        mode=request.mode.value,
        status=BatchStatus.PENDING.value,
        total_operations=len(request.operations),
        fingerprint=fingerprint,
        correlation_id=correlation_id,
        created_at=now,
        # Kept with it: a cancel skips its operations at once, a retry runs them again.
        request=request.model_dump(mode="json"),
        dry_run=request.dry_run,
        retry_of=request.retry_of,
    )
    written: Any = await conn.execute(
        row.on_conflict_do_update(
            index_elements=[batch_operations.c.batch_id],
            set_={name: row.excluded[name] for name in _FILLED_IN},
            where=batch_operations.c.fingerprint == UNKNOWN_REQUEST,
        ).returning(literal_column("xmax = 0"))
    )
    inserted = written.scalar_one_or_none()
    if inserted is not None:
        # A new row, or the cancelled one filled in: never to be forgotten if publishing fails.
        return Stored.NEW if inserted else Stored.SAME
    stored = await conn.scalar(
        select(batch_operations.c.fingerprint).where(
            batch_operations.c.batch_id == request.batch_id
        )
    )
    return Stored.SAME if stored == fingerprint else Stored.CONFLICT


async def forget_pending(conn: AsyncConnection, batch_id: UUID) -> None:
    """Delete a batch that is still `pending`: its request never reached the broker."""
    await conn.execute(
        delete(batch_operations).where(
            (batch_operations.c.batch_id == batch_id)
            & (batch_operations.c.status == BatchStatus.PENDING.value)
        )
    )
