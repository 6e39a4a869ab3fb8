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
    Text,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
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
WAITING = or_(w.c.leased_by.is_(None), w.c.lease_until < func.statement_timestamp())

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

_SETTLED = w.c.id == func.any(bindparam("settled", type_=ARRAY(BigInteger)))
# Leasing reads a few index entries however deep the room: each waiting actor's oldest request
# (a skip scan, `heads`, over the free rows' index on namespace, actor and id), then the oldest
# head of an actor not to avoid, else the oldest head; from there, that actor's first request
# no other consumer is leasing at this instant (SKIP LOCKED; if none, `lease` asks again).
# In the same statement, leases that ran out are cleared (their consumer died: the request
# waits again for the next lease) and the requests settled since the last lease are deleted
# (a transaction saved per request: a slot that frees is usually filled at once). Written as
# SQL: Core has no recursive LATERAL.
_LEASE = Statement(
    text(
        f"""
WITH RECURSIVE heads(actor_id, id) AS (
    (SELECT actor_id, id FROM waiting_requests
     WHERE namespace = :namespace AND leased_by IS NULL ORDER BY actor_id, id LIMIT 1)
  UNION ALL
    SELECT next.actor_id, next.id FROM heads, LATERAL (
        SELECT actor_id, id FROM waiting_requests
        WHERE namespace = :namespace AND leased_by IS NULL AND actor_id > heads.actor_id
        ORDER BY actor_id, id LIMIT 1) AS next
), ran_out AS (
    UPDATE waiting_requests SET leased_by = NULL, lease_until = NULL
    WHERE namespace = :namespace AND leased_by IS NOT NULL
      AND lease_until < statement_timestamp() AND NOT id = ANY(:settled)
), settled AS (
    DELETE FROM waiting_requests WHERE id = ANY(:settled)
), chosen AS (
    SELECT actor_id, id FROM heads WHERE NOT id = ANY(:settled)
    ORDER BY actor_id = ANY(:avoid), id LIMIT 1
)
UPDATE waiting_requests
SET leased_by = :owner, lease_until = statement_timestamp() + :lease,
    attempts = attempts + 1
WHERE id = (
    SELECT id FROM waiting_requests
    WHERE namespace = :namespace AND leased_by IS NULL AND NOT id = ANY(:settled)
      AND actor_id = (SELECT actor_id FROM chosen) AND id >= (SELECT id FROM chosen)
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, actor_id, body, routing_key, attempts, {", ".join(_PROPERTIES)}
"""
    ).bindparams(
        bindparam("namespace", type_=Text),
        bindparam("settled", type_=ARRAY(BigInteger)),
        bindparam("owner", type_=Text),
        bindparam("lease", type_=Interval),
        bindparam("avoid", type_=ARRAY(Integer)),
    )
)
# Whether anything waits (after a lease that found its choice taken by another consumer).
_ANY_FREE = Statement(select(select(w.c.id).where(_OF_NAMESPACE, w.c.leased_by.is_(None)).exists()))
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
# Tries of a lease whose choice another consumer took first, before giving up for this round.
_LEASE_TRIES = 10
_WAITING = Statement(select(func.count()).select_from(w).where(_OF_NAMESPACE, WAITING))


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
        row = await self._write(lambda s: self._lease_in(s, params))
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

    async def _lease_in(self, session: Session, params: dict[str, Any]) -> Record | None:
        for _ in range(_LEASE_TRIES):
            rows: list[Record] = await session.fetch_alone(_LEASE, params)
            if rows:
                return rows[0]
            params = {**params, "settled": []}  # deleted by the first try
            if not (await session.fetch_alone(_ANY_FREE, params))[0][0]:
                return None
        return None

    async def _write(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """`work` runs statements alone: each is its own transaction (one round trip)."""

        async def attempt() -> T:
            session = await self._pool.acquire()
            try:
                return await work(session)
            finally:
                await self._pool.release(session)

        return await self._tx.retry(attempt)
