"""Operation events, read for the relay straight from operation_results (no outbox row each).

Each result row carries `txid`, the id of the transaction that inserted it. The relay keeps a
position (relay_positions): a `horizon`, below which every transaction's rows have been
published, but for the `pending` ones, which were still running when it last looked. A pass
reads the rows above the horizon and those of the pending transactions, as of one snapshot:
a transaction below the snapshot's xmax that it does not list as running has committed (its
rows are all visible) or rolled back (none will ever be). The new horizon is that xmax; the
new pending set, the snapshot's running transactions below it.

So the pending set is as small as the number of transactions running at one moment, however
long one of them lasts and however many commit meanwhile, and a row committed late (from a
transaction that began early) is still found. The position moves in the transaction that
marks the pass published, after the broker confirmed its events: a crash in between publishes
them again (at-least-once). One relay at a time reads (a transaction-scoped advisory lock,
which assigns no transaction id and so is nobody's running transaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Uuid,
    all_,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from consumer.adapters.pg import Session, Statement
from consumer.adapters.tables import operation_results, relay_positions
from consumer.service_layer.unit_of_work import OutboxMessage
from contracts import operation_routing_key

POSITION = "operation_events"  # relay_positions.name
# pg_try_advisory_xact_lock key of "batchops operation events relay".
_RELAY_LOCK = 0x6F70657265766E74
_SNAPSHOT_XMAX: ColumnElement[int] = literal_column(
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint", BigInteger
)
_SNAPSHOT_RUNNING: ColumnElement[Any] = literal_column(
    "ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text::bigint)", ARRAY(BigInteger)
)
_TXIDS = ARRAY(BigInteger)

_START = Statement(
    select(
        func.pg_try_advisory_xact_lock(_RELAY_LOCK),
        relay_positions.c.horizon,
        relay_positions.c.pending,
        _SNAPSHOT_XMAX,
        _SNAPSHOT_RUNNING,
    ).where(relay_positions.c.name == POSITION)
)
_COLUMNS = (operation_results.c.txid, operation_results.c.event, operation_results.c.traceparent)
_ORDER = (operation_results.c.txid, operation_results.c.batch_id, operation_results.c.index)
# Announced rows not yet published, as the snapshot `_START` took saw them: this statement
# runs later and may see more commits; those wait for the next pass.
_NEW = Statement(
    select(*_COLUMNS)
    .where(
        operation_results.c.announce.is_(True),
        or_(
            operation_results.c.txid >= bindparam("horizon"),
            operation_results.c.txid == any_(bindparam("pending", type_=_TXIDS)),
        ),
        operation_results.c.txid < bindparam("xmax"),
        operation_results.c.txid != all_(bindparam("running", type_=_TXIDS)),
    )
    .order_by(*_ORDER)
    .limit(bindparam("limit"))
)
_OF_ONE_TRANSACTION = Statement(
    select(*_COLUMNS)
    .where(operation_results.c.announce.is_(True), operation_results.c.txid == bindparam("txid"))
    .order_by(*_ORDER)
)
_MOVE = Statement(
    update(relay_positions)
    .where(relay_positions.c.name == POSITION)
    .values(horizon=bindparam("horizon"), pending=bindparam("pending", type_=_TXIDS))
)


_BATCHES_BEHIND = Statement(
    select(operation_results.c.batch_id)
    .distinct()
    .where(
        operation_results.c.batch_id == any_(bindparam("batch_ids", type_=ARRAY(Uuid))),
        operation_results.c.announce.is_(True),
        or_(
            operation_results.c.txid >= bindparam("horizon"),
            operation_results.c.txid == any_(bindparam("pending", type_=_TXIDS)),
        ),
    )
)


def _position(column: ColumnElement[Any]) -> Any:
    return select(column).where(relay_positions.c.name == POSITION).scalar_subquery()


# The result rows whose events the relay has not published yet (for the read side: those of
# its pass in progress may be out already, it moves once they are confirmed).
UNPUBLISHED: ColumnElement[bool] = operation_results.c.announce.is_(True) & or_(
    operation_results.c.txid >= _position(relay_positions.c.horizon),
    # Cast: `= ANY (SELECT …)` would compare with each row of the subquery, not each element.
    operation_results.c.txid == any_(cast(_position(relay_positions.c.pending), _TXIDS)),
)


@dataclass(frozen=True, slots=True)
class OperationEvents:
    """Events to publish; once every one is confirmed, the position moves to `horizon` and
    `pending`. `complete`: these are all the events committed when the pass looked."""

    messages: list[OutboxMessage]
    horizon: int
    pending: list[int]
    complete: bool


async def take_operation_events(
    session: Session, exchange: str, limit: int
) -> OperationEvents | None:
    """About `limit` of the oldest unpublished events (whole transactions only), or None
    when another relay is at it."""
    start: Any = await session.fetchrow(_START)  # (locked, horizon, pending, xmax, running)
    if not start[0]:
        return None
    horizon: int = start[1]
    pending: list[int] = start[2]
    xmax: int = start[3]
    running: list[int] = start[4]
    rows = await session.fetch(
        _NEW,
        {"horizon": horizon, "pending": pending, "xmax": xmax, "running": running, "limit": limit},
    )
    # `read_below`: every row the snapshot shows of a transaction below it has been read.
    read_below = xmax
    if len(rows) == limit and rows[0][0] != rows[-1][0]:
        read_below = rows[-1][0]  # that transaction's rows may go on past the limit: next pass
        rows = [row for row in rows if row[0] != read_below]
    elif len(rows) == limit:  # one transaction of more rows than the limit: all of it
        read_below = rows[0][0] + 1
        rows = await session.fetch(_OF_ONE_TRANSACTION, {"txid": rows[0][0]})
    still_pending = {t for t in pending if t >= read_below} | {t for t in running if t < read_below}
    messages = [_message(exchange, event, traceparent) for _, event, traceparent in rows]
    return OperationEvents(
        messages, max(horizon, read_below), sorted(still_pending), read_below == xmax
    )


async def batches_behind(
    session: Session, events: OperationEvents, batch_ids: list[UUID]
) -> set[UUID]:
    """Of `batch_ids`, the batches with operation events still unpublished once `events` are.
    A batch's completion commits after its operations, so a completion the relay read before
    this pass's snapshot may go out with the pass unless its batch is among these: under a
    steady flood the pass is never `complete`, and completions must not wait for it to end."""
    if not batch_ids:
        return set()
    rows = await session.fetch(
        _BATCHES_BEHIND,
        {"batch_ids": batch_ids, "horizon": events.horizon, "pending": events.pending},
    )
    return {row[0] for row in rows}


async def advance(session: Session, events: OperationEvents) -> None:
    """Move the position past `events` (in the session's transaction). Not when there were
    none: the old position covers everything the new one would, and an idle relay writing
    it on every pass would be a write per poll for nothing."""
    if events.messages:
        await session.execute(_MOVE, {"horizon": events.horizon, "pending": events.pending})


def _message(exchange: str, event: bytes, traceparent: str | None) -> OutboxMessage:
    fields = json.loads(event)
    return OutboxMessage(
        exchange=exchange,
        routing_key=operation_routing_key(fields["operation_type"], fields["outcome"]),
        message_id=UUID(fields["event_id"]),
        correlation_id=fields.get("correlation_id"),
        body=event,
        traceparent=traceparent,
    )
