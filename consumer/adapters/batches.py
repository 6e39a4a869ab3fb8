"""The batch's own rows: its record (claimed, completed, rejected) and each operation's result
row, recorded in one statement with the operation's effect (the event rides in the row)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    bindparam,
    func,
    insert,
    not_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from consumer.adapters.batch_rows import claimed_columns, stored_batch
from consumer.adapters.marketplace import SAVES
from consumer.adapters.pg import Session, Statement
from consumer.adapters.tables import batch_operations, operation_results
from consumer.domain.batch import BatchState
from consumer.service_layer.unit_of_work import (
    BatchCancelled,
    BatchRepository,
    DuplicateResult,
    StoredBatch,
    StoredResult,
)
from contracts import UNKNOWN_OPERATION_TYPE, BatchStatus, Mode, Outcome

_RESULTS_PK = "pk_operation_results"

_COUNTERS = {
    Outcome.SUCCEEDED: "completed_operations",
    Outcome.FAILED: "failed_operations",
    Outcome.SKIPPED: "skipped_operations",
}
_COUNTED_NAMES = frozenset(_COUNTERS.values())
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
    "request",
    "dry_run",
    "retry_of",
)
# The fingerprint of a batch cancelled before anybody saw its request.
UNKNOWN_REQUEST = bytes(32)
_CLAIM = Statement(
    pg_insert(batch_operations)
    .values({name: bindparam(name) for name in _CLAIMED_COLUMNS})
    .on_conflict_do_nothing(index_elements=[batch_operations.c.batch_id])
    .returning(batch_operations.c.batch_id)
)
# Taken over by the consumer of the same request: a batch the HTTP API stored as `pending`
# before publishing it, one refused earlier for a reason fixed since (never executed), or one
# cancelled in advance (it keeps its cancel, and so runs nothing).
_TAKE_OVER = Statement(
    update(batch_operations)
    .where(
        (batch_operations.c.batch_id == bindparam("batch_id"))
        & (
            (batch_operations.c.status == BatchStatus.PENDING.value)
            | (batch_operations.c.status == BatchStatus.REJECTED.value)
        )
        & (
            (batch_operations.c.fingerprint == bindparam("fingerprint"))
            | (batch_operations.c.fingerprint == UNKNOWN_REQUEST)
        )
    )
    .values(
        {
            **{
                name: bindparam(name)
                for name in _CLAIMED_COLUMNS
                if name not in ("batch_id", "created_at", "correlation_id")
            },
            # The API's own id for a batch it stored; the request's for one cancelled unseen.
            "correlation_id": func.coalesce(
                batch_operations.c.correlation_id, bindparam("correlation_id", type_=String)
            ),
            "completed_at": None,
            "completion_event": None,
            "code": None,
            "errors": None,
        }
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
# Every column but the request, which only retries and cancels read (see request_of).
# What `get` adds to the batch's row: its operations' outcomes, counted (a running batch keeps
# no counters; `complete` stores them with its terminal status).
_counted = (
    select(
        *(
            func.count().filter(operation_results.c.outcome == outcome.value).label(name)
            for outcome, name in _COUNTERS.items()
        )
    )
    .where(operation_results.c.batch_id == batch_operations.c.batch_id)
    .lateral("counted")
)
# Every column but the request (only retries and cancels read it, see request_of), with the
# counters counted.
_BATCH = (
    select(
        *(c for c in batch_operations.c if c.name != "request" and c.name not in _COUNTED_NAMES),
        *_counted.c,
    )
    .select_from(batch_operations.join(_counted, true()))
    .where(batch_operations.c.batch_id == bindparam("batch_id"))
)
_GET_BATCH = Statement(_BATCH)
_GET_BATCH_FOR_UPDATE = Statement(_BATCH.with_for_update(of=batch_operations))
_REQUEST_OF = Statement(
    select(batch_operations.c.request).where(batch_operations.c.batch_id == bindparam("batch_id"))
)
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
_CANCEL_REQUESTED = batch_operations.c.cancel_requested_at.is_not(None)
_MARK_IN_HAND = Statement(
    _UPDATE_BATCH.values(in_hand=bindparam("in_hand")).returning(_CANCEL_REQUESTED)
)
_COMPLETE = Statement(
    _UPDATE_BATCH.values(
        status=bindparam("status"),
        completed_at=bindparam("completed_at"),
        completion_event=bindparam("completion_event"),
        **{name: bindparam(name) for name in _COUNTED_NAMES},
    )
)
_REQUEST_CANCEL = Statement(
    _UPDATE_BATCH.values(
        cancel_requested_at=func.coalesce(
            batch_operations.c.cancel_requested_at, bindparam("at", type_=DateTime(timezone=True))
        ),
        cancel_requested_by=func.coalesce(
            batch_operations.c.cancel_requested_by, bindparam("by", type_=Integer)
        ),
    )
)
_placeholder = pg_insert(batch_operations).values(
    batch_id=bindparam("batch_id"),
    operation_type=UNKNOWN_OPERATION_TYPE,
    actor_id=bindparam("actor_id"),
    mode=Mode.CONTINUE.value,
    status=BatchStatus.PENDING.value,
    total_operations=0,
    fingerprint=UNKNOWN_REQUEST,
    created_at=bindparam("at"),
    cancel_requested_at=bindparam("at"),
    cancel_requested_by=bindparam("by", type_=Integer),
)
# A batch nobody has seen: a placeholder that its claim takes over. Should its claim come first
# after all, the cancel lands on that batch as on any other still running.
_CANCEL_IN_ADVANCE = Statement(
    _placeholder.on_conflict_do_update(
        index_elements=[batch_operations.c.batch_id],
        set_={
            "cancel_requested_at": func.coalesce(
                batch_operations.c.cancel_requested_at, _placeholder.excluded.cancel_requested_at
            ),
            "cancel_requested_by": func.coalesce(
                batch_operations.c.cancel_requested_by, _placeholder.excluded.cancel_requested_by
            ),
        },
        where=(batch_operations.c.status == BatchStatus.PENDING.value)
        | (batch_operations.c.status == BatchStatus.PROCESSING.value),
    )
)


def _recording() -> dict[str | None, Statement]:
    """The result row, its effect's deferred write riding along (a variant per kind).

    The row is taken from the batch's own row FOR KEY SHARE (the lock the foreign key takes
    anyway): a cancel takes that row FOR UPDATE first, so an operation either commits before
    the cancel or, once the cancel is committed, finds it and inserts nothing (a cancellable
    result then returns no row). Neither the batch row nor an outbox row is written: the
    counters are counted from the results, and the relay publishes the events from them."""
    values = select(
        batch_operations.c.batch_id,
        bindparam("index", type_=SmallInteger),
        bindparam("resource_id", type_=BigInteger),
        bindparam("outcome", type_=String),
        bindparam("status", type_=SmallInteger),
        bindparam("error_code", type_=String),
        bindparam("event", type_=LargeBinary),
        bindparam("announce", type_=Boolean),
        bindparam("traceparent", type_=String),
    ).where(
        (batch_operations.c.batch_id == bindparam("batch_id"))
        & (
            batch_operations.c.cancel_requested_at.is_(None)
            | not_(bindparam("cancellable", type_=Boolean))
        )
    )
    record = (
        insert(operation_results)
        .from_select(
            [
                "batch_id",
                "index",
                "resource_id",
                "outcome",
                "status_code",
                "error_code",
                "event",
                "announce",
                "traceparent",
            ],
            values.with_for_update(read=True, key_share=True),
        )
        .returning(operation_results.c.index)
    )
    variants: dict[str | None, Statement] = {None: Statement(record)}
    for key, save in SAVES.items():
        variants[key] = Statement(record.add_cte(save.cte("effect")))
    return variants


_RECORD = _recording()


class SqlBatchRepository(BatchRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    async def claim(self, batch: StoredBatch) -> tuple[StoredBatch, bool]:
        state = batch.state
        columns = claimed_columns(batch)
        inserted = await self._session.fetchval(_CLAIM, columns)
        if inserted is not None:
            return batch, True
        taken_over = await self._session.fetchval(_TAKE_OVER, columns)
        existing = await self.get(state.batch_id)
        if existing is None:  # deleted between the two statements by cleanup
            raise LookupError(f"batch {state.batch_id} disappeared while being claimed")
        return existing, taken_over is not None

    async def record_rejection(self, batch: StoredBatch) -> bool:
        errors = [reason.model_dump(mode="json") for reason in batch.errors or []]
        stored = await self._session.fetchval(
            _RECORD_REJECTION,
            {
                **claimed_columns(batch),
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
        return None if row is None else stored_batch(row)

    async def request_of(self, batch_id: UUID) -> dict[str, Any] | None:
        stored = await self._session.fetchval(_REQUEST_OF, {"batch_id": batch_id})
        return None if stored is None else dict(json.loads(stored))

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
        *,
        announce: bool,
        traceparent: str | None,
        cancellable: bool,
    ) -> None:
        parameters = {
            "batch_id": batch_id,
            "index": index,
            "resource_id": resource_id,
            "outcome": outcome.value,
            "status": status,
            "error_code": error_code,
            "event": event,
            "announce": announce,
            "traceparent": traceparent,
            "cancellable": cancellable,
        }
        try:
            recorded = await self._session.execute_with_deferred(_RECORD, parameters)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == _RESULTS_PK:
                raise DuplicateResult(f"batch {batch_id} operation {index}") from exc
            raise
        if recorded is None:
            raise BatchCancelled(f"batch {batch_id} was cancelled before operation {index}")

    async def mark_in_hand(self, batch_id: UUID, index: int) -> None:
        cancelled = await self._session.fetchval(
            _MARK_IN_HAND, {"batch_id": batch_id, "in_hand": index}
        )
        if cancelled:
            raise BatchCancelled(f"batch {batch_id} was cancelled before operation {index}")

    async def request_cancel(self, batch_id: UUID, by: int | None, at: datetime) -> None:
        await self._session.execute(_REQUEST_CANCEL, {"batch_id": batch_id, "by": by, "at": at})

    async def cancel_in_advance(self, batch_id: UUID, by: int | None, at: datetime) -> None:
        await self._session.execute(
            _CANCEL_IN_ADVANCE, {"batch_id": batch_id, "actor_id": by or 0, "by": by, "at": at}
        )

    async def complete(self, state: BatchState, completion_event: bytes) -> None:
        await self._session.execute(
            _COMPLETE,
            {
                "batch_id": state.batch_id,
                "status": state.status.value,
                "completed_at": state.completed_at,
                "completion_event": completion_event,
                "completed_operations": state.completed,
                "failed_operations": state.failed,
                "skipped_operations": state.skipped,
            },
        )
