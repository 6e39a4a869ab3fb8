"""The batch's own rows: its record (claimed, completed, rejected) and each operation's result
row, recorded in one statement with its event's outbox row and the batch's counter."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import asyncpg
from sqlalchemy import Column, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from consumer.adapters.marketplace import SAVES
from consumer.adapters.outbox import outbox_insert, outbox_parameters
from consumer.adapters.pg import Record, Session, Statement
from consumer.adapters.queries import batch_state
from consumer.adapters.tables import batch_operations, operation_results
from consumer.service_layer.unit_of_work import (
    BatchRepository,
    DuplicateResult,
    OutboxMessage,
    StoredBatch,
    StoredResult,
)
from contracts import BatchStatus, Outcome

_RESULTS_PK = "pk_operation_results"

_CLAIMED_COLUMNS = (
    "batch_id",
    "operation_type",
    "handler",
    "actor_id",
    "mode",
    "status",
    "total_operations",
    "fingerprint",
    "correlation_id",
    "created_at",
    "started_at",
)
_CLAIM = Statement(
    pg_insert(batch_operations)
    .values({name: bindparam(name) for name in _CLAIMED_COLUMNS})
    .on_conflict_do_nothing(index_elements=[batch_operations.c.batch_id])
    .returning(batch_operations.c.batch_id)
)
# Taken over by the consumer of the same request: a batch the HTTP API stored as `pending`
# before publishing it, or one refused earlier for a reason fixed since (never executed).
_TAKE_OVER = Statement(
    update(batch_operations)
    .where(
        (batch_operations.c.batch_id == bindparam("batch_id"))
        & (
            (batch_operations.c.status == BatchStatus.PENDING.value)
            | (batch_operations.c.status == BatchStatus.REJECTED.value)
        )
        & (batch_operations.c.fingerprint == bindparam("fingerprint"))
    )
    .values(
        status=BatchStatus.PROCESSING.value,
        started_at=bindparam("started_at"),
        total_operations=bindparam("total_operations"),  # a rejected batch counted none
        completed_at=None,
        completion_event=None,
        code=None,
        errors=None,
    )
    .returning(batch_operations.c.batch_id)
)
_REJECTED_COLUMNS = (*_CLAIMED_COLUMNS, "completed_at", "completion_event", "code", "errors")
_rejected = pg_insert(batch_operations).values(
    {name: bindparam(name) for name in _REJECTED_COLUMNS}
)
_RECORD_REJECTION = Statement(
    _rejected.on_conflict_do_update(
        index_elements=[batch_operations.c.batch_id],
        set_={
            name: _rejected.excluded[name]
            for name in ("status", "completed_at", "completion_event", "code", "errors")
        },
        where=(batch_operations.c.status == BatchStatus.PENDING.value)
        & (batch_operations.c.fingerprint == _rejected.excluded.fingerprint),
    ).returning(batch_operations.c.batch_id)
)
_BATCH = select(batch_operations).where(batch_operations.c.batch_id == bindparam("batch_id"))
_GET_BATCH = Statement(_BATCH)
_GET_BATCH_FOR_UPDATE = Statement(_BATCH.with_for_update())
_RESULTS = Statement(
    select(operation_results.c.index, operation_results.c.outcome)
    .where(operation_results.c.batch_id == bindparam("batch_id"))
    .order_by(operation_results.c.index)
)
_RESULT_EVENTS = Statement(
    select(operation_results.c.event)
    .where(operation_results.c.batch_id == bindparam("batch_id"))
    .order_by(operation_results.c.index)
)
_UPDATE_BATCH = update(batch_operations).where(batch_operations.c.batch_id == bindparam("batch_id"))
_MARK_IN_HAND = Statement(_UPDATE_BATCH.values(in_hand=bindparam("in_hand")))
_COMPLETE = Statement(
    _UPDATE_BATCH.values(
        status=bindparam("status"),
        completed_at=bindparam("completed_at"),
        completion_event=bindparam("completion_event"),
    )
)


def _recording(counter: Column[int]) -> dict[str | None, Statement]:
    """The result row, its event's outbox row and the batch counter in one statement; with a
    variant per deferred write that may ride along."""
    result = insert(operation_results).values(
        batch_id=bindparam("batch_id"),
        index=bindparam("index"),
        resource_id=bindparam("resource_id"),
        outcome=bindparam("outcome"),
        status_code=bindparam("status"),
        error_code=bindparam("error_code"),
        event=bindparam("event"),
    )
    announcement = outbox_insert(prefix="o_")
    record = _UPDATE_BATCH.values({counter: counter + 1}).add_cte(
        result.cte("result"), announcement.cte("announcement")
    )
    variants: dict[str | None, Statement] = {None: Statement(record)}
    for key, save in SAVES.items():
        variants[key] = Statement(record.add_cte(save.cte("effect")))
    return variants


_RECORD = {
    Outcome.SUCCEEDED: _recording(batch_operations.c.completed_operations),
    Outcome.FAILED: _recording(batch_operations.c.failed_operations),
    Outcome.SKIPPED: _recording(batch_operations.c.skipped_operations),
}


class SqlBatchRepository(BatchRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    async def claim(self, batch: StoredBatch) -> tuple[StoredBatch, bool]:
        state = batch.state
        inserted = await self._session.fetchval(_CLAIM, _claimed_columns(batch))
        if inserted is not None:
            return batch, True
        taken_over = await self._session.fetchval(
            _TAKE_OVER,
            {
                "batch_id": state.batch_id,
                "fingerprint": batch.fingerprint,
                "started_at": state.started_at,
                "total_operations": state.total,
            },
        )
        existing = await self.get(state.batch_id)
        if existing is None:  # deleted between the two statements by cleanup
            raise LookupError(f"batch {state.batch_id} disappeared while being claimed")
        return existing, taken_over is not None

    async def record_rejection(self, batch: StoredBatch) -> bool:
        errors = [reason.model_dump(mode="json") for reason in batch.errors or []]
        stored = await self._session.fetchval(
            _RECORD_REJECTION,
            {
                **_claimed_columns(batch),
                "completed_at": batch.state.completed_at,
                "completion_event": batch.completion_event,
                "code": batch.code.value if batch.code else None,
                "errors": json.dumps(errors),
            },
        )
        return stored is not None

    async def get(self, batch_id: UUID, *, for_update: bool = False) -> StoredBatch | None:
        query = _GET_BATCH_FOR_UPDATE if for_update else _GET_BATCH
        row = await self._session.fetchrow(query, {"batch_id": batch_id})
        return None if row is None else _stored_batch(row)

    async def results(self, batch_id: UUID) -> list[StoredResult]:
        rows = await self._session.fetch(_RESULTS, {"batch_id": batch_id})
        return [StoredResult(index, Outcome(outcome)) for index, outcome in rows]

    async def result_events(self, batch_id: UUID) -> list[bytes]:
        rows = await self._session.fetch(_RESULT_EVENTS, {"batch_id": batch_id})
        return [row[0] for row in rows]

    async def add_result(
        self,
        batch_id: UUID,
        index: int,
        resource_id: int,
        outcome: Outcome,
        status: int,
        error_code: str | None,
        event: bytes,
        announcement: OutboxMessage,
    ) -> None:
        parameters = {
            "batch_id": batch_id,
            "index": index,
            "resource_id": resource_id,
            "outcome": outcome.value,
            "status": status,
            "error_code": error_code,
            "event": event,
            **outbox_parameters(announcement, prefix="o_"),
        }
        try:
            await self._session.execute_with_deferred(_RECORD[outcome], parameters)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == _RESULTS_PK:
                raise DuplicateResult(f"batch {batch_id} operation {index}") from exc
            raise

    async def mark_in_hand(self, batch_id: UUID, index: int) -> None:
        await self._session.execute(_MARK_IN_HAND, {"batch_id": batch_id, "in_hand": index})

    async def complete(
        self, batch_id: UUID, status: BatchStatus, completed_at: datetime, completion_event: bytes
    ) -> None:
        await self._session.execute(
            _COMPLETE,
            {
                "batch_id": batch_id,
                "status": status.value,
                "completed_at": completed_at,
                "completion_event": completion_event,
            },
        )


def _claimed_columns(batch: StoredBatch) -> dict[str, object]:
    state = batch.state
    return {
        "batch_id": state.batch_id,
        "operation_type": state.operation_type,
        "handler": batch.handler,
        "actor_id": state.actor_id,
        "mode": state.mode.value,
        "status": state.status.value,
        "total_operations": state.total,
        "fingerprint": batch.fingerprint,
        "correlation_id": batch.correlation_id,
        "created_at": state.created_at,
        "started_at": state.started_at,
    }


def _stored_batch(row: Record) -> StoredBatch:
    state = batch_state(row)
    return StoredBatch(
        state=state,
        handler=row["handler"],
        fingerprint=row["fingerprint"],
        correlation_id=row["correlation_id"],
        completion_event=row["completion_event"],
        in_hand=row["in_hand"],
    )
