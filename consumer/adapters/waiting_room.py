"""The waiting room in PostgreSQL (service_layer/waiting_room.py): one `waiting_requests` row
per parked request, leased with `FOR UPDATE SKIP LOCKED` so that competing consumers never
take the same one, and deleted once its batch is terminal."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Integer,
    Interval,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert

from consumer.adapters.pg import ConnectionPool, Record, Session, Statement
from consumer.adapters.tables import waiting_requests as w
from consumer.service_layer.intake import Delivery
from consumer.service_layer.retry import Transactions
from consumer.service_layer.waiting_room import Parked, WaitingRoom

T = TypeVar("T")
# The delivery's properties, named as Delivery names them.
_PROPERTIES = (
    "user_id",
    "message_id",
    "correlation_id",
    "reply_to",
    "content_type",
    "published_at",
    "traceparent",
)
_OF_NAMESPACE = w.c.namespace == bindparam("namespace")
_LEASE_ENDS = func.statement_timestamp() + bindparam("lease", type_=Interval)

# Waiting: never leased, or its lease ran out (its consumer died).
_FREE = or_(w.c.leased_by.is_(None), w.c.lease_until < func.statement_timestamp())

_PARK = Statement(
    insert(w)
    .values(
        namespace=bindparam("namespace"),
        batch_id=bindparam("batch_id"),
        body_sha256=bindparam("body_sha256"),
        actor_id=bindparam("actor_id"),
        body=bindparam("body"),
        routing_key=bindparam("routing_key"),
        **{name: bindparam(name) for name in _PROPERTIES},
    )
    .on_conflict_do_nothing()
)

# The oldest free request of an actor not to avoid, else the oldest free one: a top-N sort of
# the namespace's free rows, cheap for the thousands a flood parks.
_NEXT = (
    select(w.c.id)
    .where(
        _OF_NAMESPACE,
        _FREE,
    )
    .order_by(
        w.c.actor_id == func.any(bindparam("avoid", type_=ARRAY(Integer))),
        w.c.id,
    )
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_LEASE = Statement(
    update(w)
    .where(w.c.id == _NEXT)
    .values(
        leased_by=bindparam("owner"),
        lease_until=_LEASE_ENDS,
        attempts=w.c.attempts + 1,
    )
    .returning(
        w.c.id,
        w.c.actor_id,
        w.c.body,
        w.c.routing_key,
        w.c.attempts,
        *(w.c[name] for name in _PROPERTIES),
    )
)
_RENEW = Statement(
    update(w)
    .where(
        w.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))),
        w.c.leased_by == bindparam("owner"),
    )
    .values(lease_until=_LEASE_ENDS)
    .returning(w.c.id)
)
_GIVE_BACK = Statement(
    update(w)
    .where(w.c.id == bindparam("id"), w.c.leased_by == bindparam("owner"))
    .values(leased_by=None, lease_until=None, attempts=w.c.attempts - 1)
)
_REMOVE = Statement(delete(w).where(w.c.id == bindparam("id")))
_WAITING = Statement(select(func.count()).select_from(w).where(_OF_NAMESPACE, _FREE))


class SqlWaitingRoom(WaitingRoom):
    def __init__(
        self,
        pool: ConnectionPool,
        transactions: Transactions,
        namespace: str,
        *,
        lease_seconds: float,
    ) -> None:
        self._pool = pool
        self._tx = transactions
        self._namespace = namespace
        self._lease = timedelta(seconds=lease_seconds)

    async def park(self, batch_id: UUID, actor: int, delivery: Delivery, routing_key: str) -> None:
        params: dict[str, Any] = {
            "namespace": self._namespace,
            "batch_id": batch_id,
            "body_sha256": hashlib.sha256(delivery.body).digest(),
            "actor_id": actor,
            "body": delivery.body,
            "routing_key": routing_key,
            **{name: getattr(delivery, name) for name in _PROPERTIES},
        }
        await self._write(lambda s: s.execute(_PARK, params))

    async def lease(self, owner: str, avoid: Collection[int]) -> Parked | None:
        params = {
            "namespace": self._namespace,
            "avoid": list(avoid),
            "owner": owner,
            "lease": self._lease,
        }
        row: Record | None = await self._write(lambda s: s.fetchrow(_LEASE, params))
        if row is None:
            return None
        delivery = Delivery(
            body=row["body"],
            delivery_count=row["attempts"] - 1,
            **{name: row[name] for name in _PROPERTIES},
        )
        return Parked(
            id=row["id"], actor=row["actor_id"], routing_key=row["routing_key"], delivery=delivery
        )

    async def renew(self, owner: str, ids: Collection[int]) -> set[int]:
        params = {"ids": list(ids), "owner": owner, "lease": self._lease}
        rows = await self._write(lambda s: s.fetch(_RENEW, params))
        return {row["id"] for row in rows}

    async def give_back(self, owner: str, parked_id: int) -> None:
        await self._write(lambda s: s.execute(_GIVE_BACK, {"id": parked_id, "owner": owner}))

    async def remove(self, parked_id: int) -> None:
        await self._write(lambda s: s.execute(_REMOVE, {"id": parked_id}))

    async def waiting(self) -> int:
        count: int = await self._write(
            lambda s: s.fetchval(_WAITING, {"namespace": self._namespace})
        )
        return count

    async def _write(self, work: Callable[[Session], Awaitable[T]]) -> T:
        async def attempt() -> T:
            session = await self._pool.acquire()
            try:
                result = await work(session)
                await session.commit()
                return result
            finally:
                await self._pool.release(session)

        return await self._tx.retry(attempt)
