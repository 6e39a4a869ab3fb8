"""The outbox table: events written in the transaction of what they announce, then taken and
settled by the relay (entrypoints/relay.py).

Rows are taken by `sent_at IS NULL`, not by id ranges, so rows committed out of id order are
never skipped. Sent operation events leave the table (operation_results keeps each one's body);
sent batch events stay, marked, because a redelivered rejection re-sends its first body from
there. A delete is also the cheaper write: marking rewrites the row and its index entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, any_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.dml import Insert

from consumer.adapters.pg import Session, Statement
from consumer.adapters.tables import outbox
from consumer.service_layer.unit_of_work import OutboxMessage, OutboxRepository
from contracts import is_operation_routing_key

# The columns of an outbox row, named as OutboxMessage names them.
_FIELDS = (
    "exchange",
    "routing_key",
    "message_id",
    "correlation_id",
    "body",
    "mandatory",
    "traceparent",
)


def outbox_insert(prefix: str = "") -> Insert:
    """The insert of one outbox row, its parameters named `prefix` + field (a prefix keeps
    them apart when the insert rides in another statement)."""
    return insert(outbox).values({name: bindparam(f"{prefix}{name}") for name in _FIELDS})


def outbox_parameters(message: OutboxMessage, prefix: str = "") -> dict[str, Any]:
    """The parameters of `outbox_insert(prefix)` for `message`."""
    return {f"{prefix}{name}": getattr(message, name) for name in _FIELDS}


_ADD = Statement(outbox_insert())
_BODY_OF = Statement(
    select(outbox.c.body).where(outbox.c.message_id == bindparam("message_id")).limit(1)
)


class SqlOutboxRepository(OutboxRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    async def add(self, message: OutboxMessage) -> None:
        await self._session.execute(_ADD, outbox_parameters(message))

    async def body_of(self, message_id: UUID) -> bytes | None:
        body: bytes | None = await self._session.fetchval(_BODY_OF, {"message_id": message_id})
        return body


@dataclass(frozen=True, slots=True)
class UnsentEvent:
    id: int
    message: OutboxMessage


_UNSENT = Statement(
    select(
        outbox.c.id,
        *(outbox.c[name] for name in _FIELDS),
    )
    .where(outbox.c.sent_at.is_(None))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
    # Several relays (one per consumer process) share the table without overlap.
    .with_for_update(skip_locked=True)
)
_SETTLE = Statement(
    update(outbox)
    .where(outbox.c.id == any_(bindparam("kept", type_=ARRAY(BigInteger))))
    .values(sent_at=func.now())
    .add_cte(
        delete(outbox)
        .where(outbox.c.id == any_(bindparam("gone", type_=ARRAY(BigInteger))))
        .cte("gone")
    )
)


async def take_unsent(session: Session, limit: int) -> list[UnsentEvent]:
    """The oldest unsent events, locked until the session's transaction ends."""
    rows = await session.fetch(_UNSENT, {"limit": limit})
    return [UnsentEvent(row[0], OutboxMessage(*row[1:])) for row in rows]


async def settle(session: Session, sent: list[UnsentEvent]) -> None:
    """Take sent events out of the unsent ones (in the session's transaction)."""
    await session.execute(
        _SETTLE,
        {
            "gone": [e.id for e in sent if is_operation_routing_key(e.message.routing_key)],
            "kept": [e.id for e in sent if not is_operation_routing_key(e.message.routing_key)],
        },
    )
