"""The waiting room in PostgreSQL (service_layer/waiting_room.py): one `waiting_requests` row
per parked request, leased with `FOR UPDATE SKIP LOCKED` so that competing consumers never
take the same one, and deleted once its batch is terminal."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any, TypeVar

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
from consumer.service_layer.waiting_room import Parked, ToPark, WaitingRoom

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
_SETTLED = w.c.id == func.any(bindparam("settled", type_=ARRAY(BigInteger)))
_NEXT = (
    select(w.c.id)
    .where(_OF_NAMESPACE, _FREE, ~_SETTLED)
    .order_by(
        w.c.actor_id == func.any(bindparam("avoid", type_=ARRAY(Integer))),
        w.c.id,
    )
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
# The requests settled since the last lease leave in the same statement (a transaction saved
# per request: a slot that frees is usually filled at once).
_LEASE = Statement(
    update(w)
    .add_cte(delete(w).where(_SETTLED).cte("settled_rows"))
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
_REMOVE = Statement(delete(w).where(_SETTLED))
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

    async def park_all(self, requests: Sequence[ToPark]) -> None:
        rows: list[dict[str, Any]] = [
            {
                "namespace": self._namespace,
                "batch_id": request.batch_id,
                "body_sha256": hashlib.sha256(request.delivery.body).digest(),
                "actor_id": request.actor,
                "body": request.delivery.body,
                "routing_key": request.routing_key,
                **{name: getattr(request.delivery, name) for name in _PROPERTIES},
            }
            for request in requests
        ]
        await self._write(lambda s: s.executemany_alone(_PARK, rows))

    async def lease(
        self, owner: str, avoid: Collection[int], settled: Collection[int] = ()
    ) -> Parked | None:
        params = {
            "namespace": self._namespace,
            "avoid": list(avoid),
            "settled": list(settled),
            "owner": owner,
            "lease": self._lease,
        }
        rows: list[Record] = await self._write(lambda s: s.fetch_alone(_LEASE, params))
        if not rows:
            return None
        row = rows[0]
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
        rows = await self._write(lambda s: s.fetch_alone(_RENEW, params))
        return {row["id"] for row in rows}

    async def give_back(self, owner: str, parked_id: int) -> None:
        await self._write(lambda s: s.fetch_alone(_GIVE_BACK, {"id": parked_id, "owner": owner}))

    async def remove(self, ids: Collection[int]) -> None:
        await self._write(lambda s: s.fetch_alone(_REMOVE, {"settled": list(ids)}))

    async def waiting(self) -> int:
        rows = await self._write(lambda s: s.fetch_alone(_WAITING, {"namespace": self._namespace}))
        count: int = rows[0][0]
        return count

    async def _write(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """`work` runs statements alone: each is its own transaction (one round trip)."""

        async def attempt() -> T:
            session = await self._pool.acquire()
            try:
                return await work(session)
            finally:
                await self._pool.release(session)

        return await self._tx.retry(attempt)
