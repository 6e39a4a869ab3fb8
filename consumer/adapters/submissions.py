"""Batches submitted over HTTP are stored `pending` before they are published, so that their
`Location` answers at once; the consumer that takes the request turns the row into its run."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.tables import batch_operations
from contracts import BatchRequest, BatchStatus


class Stored(enum.Enum):
    NEW = "new"
    # The same batch_id with the same body: publishing it again is a harmless re-submission.
    SAME = "same"
    CONFLICT = "conflict"


async def store_pending(
    conn: AsyncConnection,
    request: BatchRequest,
    *,
    fingerprint: bytes,
    correlation_id: str,
    now: datetime,
) -> Stored:
    """Insert the batch as `pending` unless its id is taken; say how the id was found."""
    inserted = await conn.scalar(
        insert(batch_operations)
        .values(
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
        )
        .on_conflict_do_nothing(index_elements=[batch_operations.c.batch_id])
        .returning(batch_operations.c.batch_id)
    )
    if inserted is not None:
        return Stored.NEW
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
